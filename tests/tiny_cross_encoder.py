"""A tiny randomly initialised cross-encoder built in code: a WordPiece tokenizer and a 2-layer BERT scorer."""

from __future__ import annotations

from pathlib import Path

SENTENCES = [
    "The library opens at nine and closes at eight.",
    "A non-resident card costs forty-five dollars per year.",
    "Part XK-42.7 is tightened to 18 newton metres; ISO-9001 audits check it.",
]


def build_tiny_cross_encoder(folder: Path, seed: int = 0) -> Path:
    """Save a sentence-transformers CrossEncoder folder (safetensors, one relevance label) to `folder`."""
    import torch
    from sentence_transformers import CrossEncoder
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    # The vocabulary is written out rather than trained: WordPiece training breaks frequency ties in
    # hash order, so a trained vocabulary (and every score) could differ from one process to the next.
    vocab = {token: n for n, token in enumerate(specials + _word_pieces())}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tokenizer = BertTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
        initializer_range=0.5,  # wide weights, so different passages get clearly different scores
    )
    raw = folder / "raw"
    BertForSequenceClassification(config).save_pretrained(raw, safe_serialization=True)
    tokenizer.save_pretrained(raw)
    CrossEncoder(str(raw), device="cpu", local_files_only=True).save(str(folder))
    return folder


def _word_pieces() -> list[str]:
    """Whole words of SENTENCES, then every character alone and as a continuation, in a fixed order."""
    words = sorted({word.strip(".,;").lower() for sentence in SENTENCES for word in sentence.split()} - {""})
    characters = sorted(set("".join(SENTENCES).lower()) - {" "})
    return list(dict.fromkeys(words + characters + [f"##{c}" for c in characters]))  # a one-letter word is also a character
