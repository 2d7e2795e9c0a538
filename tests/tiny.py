"""Tiny randomly initialised models built in code: a chat LM (byte-level BPE, 2-layer Llama) and an embedder."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SENTENCES = [
    "The library opens at nine and closes at eight.",
    "A non-resident card costs forty-five dollars per year.",
    "Questions, answers, documents and sources are cited with numbers.",
    "<context> <document> </document> </context> Question: Answer:",
]


def build_tiny_lm(folder: Path, seed: int = 0) -> Path:
    """Save a tiny tokenizer + LlamaForCausalLM (safetensors) to `folder` and return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(SENTENCES * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None, unk_token=None
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_embedder(folder: Path, seed: int = 0):
    """A SentenceTransformer of two BERT layers of width 32 with minilm-l6's tokenizer, mean pooling and
    normalisation, saved (safetensors) to `folder` as a plain sentence-transformers folder; returns the model."""
    import shutil

    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel

    from models.loading import embedder_folder

    torch.manual_seed(seed)
    raw = folder / "bert"
    raw.mkdir(parents=True)
    vocab = embedder_folder("minilm-l6")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (vocab / name).is_file():
            shutil.copyfile(vocab / name, raw / name)
    size = sum(1 for _ in (vocab / "vocab.txt").open(encoding="utf-8"))
    config = BertConfig(
        vocab_size=size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(raw)
    modules = [Transformer(str(raw), max_seq_length=64), Pooling(32, "mean"), Normalize()]
    model = SentenceTransformer(modules=modules, device="cpu")
    model.save(str(folder / "model"), safe_serialization=True)
    return model
