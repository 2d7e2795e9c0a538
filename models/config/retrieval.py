"""The index and rag sections: the vector index, chunking, retrieval, fusion, reranking and grounding."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from models.config.choices import Citation, IndexBackend, RetrieverKind, check


@dataclass(frozen=True)
class IndexConfig:
    # Name of the index folder under $RAGTUNE_HOME/indexes.
    name: str = "default"
    # The vector index engine: hnswlib (a file in each index generation) or milvus (a collection per
    # generation in Milvus Lite or a Milvus server, at index.uri, holding the chunks' texts too: a node
    # without the index folder serves dense retrieval from index.uri and index.name alone).
    backend: IndexBackend = "hnswlib"
    # milvus only: a local file ending in .db (Milvus Lite, embedded: one process at a time) or a server
    # address such as http://host:19530 (any number of processes and machines).
    uri: str | None = None
    # milvus only: a file holding the server's token (user:password or an API key); null: no token.
    # The token itself never sits in a config, where it would be saved next to every index.
    token_file: str | None = None
    # Vector distance: cosine | ip | l2.
    space: Literal["cosine", "ip", "l2"] = "cosine"
    # Graph degree: higher raises recall and memory.
    m: int = 16
    # Build-time candidate list: higher raises recall and build time.
    ef_construction: int = 200
    # Query-time candidate list: higher raises recall and latency (never below top_k).
    ef_search: int = 64

    def __post_init__(self) -> None:
        check(
            bool(self.name) and "/" not in self.name and not self.name.startswith("."),
            "index.name",
            f"should be a plain folder name, got {self.name!r}",
        )
        for key in ("m", "ef_construction", "ef_search"):
            value = getattr(self, key)
            check(value > 0, f"index.{key}", f"should be positive, got {value}")
        if self.backend == "milvus":
            check(
                bool(self.uri),
                "index.uri",
                "is required with index.backend=milvus: a local .db file or http://host:19530",
            )
            uri = self.uri or ""
            server = re.match(r"(https?|tcp|unix)://", uri) is not None
            check(
                server or uri.endswith(".db"),
                "index.uri",
                f"should be a local path ending in .db or http://host:19530, got {uri!r}",
            )
            # The config is saved next to every index it builds: a password in the address would be too.
            check(
                re.match(r"\w+://[^/]*@", uri) is None,
                "index.uri",
                "should not hold credentials; put the token in a file and set index.token_file",
            )
        check(self.token_file is None or bool(self.token_file), "index.token_file", "should be a file path or null")


@dataclass(frozen=True)
class HybridConfig:
    # How the dense and the lexical rankings become one: rrf sums weight / (rrf_k + rank) over the two
    # sides; weighted sums weight * score, each side's scores min-max normalised to 0..1 over its candidates.
    # weighted at 0.5 found the passage most often on long documents (BENCHMARKS.md, retrieval section).
    method: Literal["rrf", "weighted"] = "weighted"
    # rrf: larger k flattens the difference between the first ranks of each side.
    rrf_k: int = 60
    # Weight of the dense side in either method; the lexical side gets 1 - dense_weight.
    dense_weight: float = 0.5

    def __post_init__(self) -> None:
        check(self.rrf_k > 0, "rag.hybrid.rrf_k", f"should be positive, got {self.rrf_k}")
        check(0 <= self.dense_weight <= 1, "rag.hybrid.dense_weight", f"should be in [0, 1], got {self.dense_weight}")


@dataclass(frozen=True)
class RerankConfig:
    # A local sentence-transformers cross-encoder folder that rescores the first stage's best candidates;
    # null: no reranking.
    model: str | None = None
    # Candidates the cross-encoder rescores (never below rag.top_k).
    candidates: int = 20
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        check(self.model is None or bool(self.model.strip()), "rag.rerank.model", "should be a folder or null")
        check(self.candidates > 0, "rag.rerank.candidates", f"should be positive, got {self.candidates}")


@dataclass(frozen=True)
class RagConfig:
    # Chunk length in embedder tokens, and the tokens shared by neighbouring chunks. Short chunks keep
    # a small LM's context focused on the fact asked about.
    chunk_tokens: int = 96
    chunk_overlap: int = 24
    # Index and embed each chunk with its document's title and section heading path (pdf: its page);
    # the text shown as a source stays the chunk alone. Fixed per index: changing it needs --rebuild. Off by
    # default: on long documents it moved evidence hit@5 by less than its interval (BENCHMARKS.md).
    contextual: bool = False
    # How chunks are found: dense (embedding similarity in the vector index), lexical (BM25 over the
    # chunks' words, numbers and codes) or hybrid (both rankings fused, see rag.hybrid).
    retriever: RetrieverKind = "hybrid"
    # Chunks retrieved per question, and the lowest dense similarity a chunk may have to be used: whichever
    # retriever found and ranked it, a chunk is kept only if its index.space similarity to the question
    # (cosine: -1..1, higher is closer) is >= min_score, so one threshold means the same for all of them.
    top_k: int = 3
    min_score: float = 0.2
    # Candidates each side (dense, lexical) hands to hybrid fusion (never below rag.top_k).
    candidates: int = 20
    hybrid: HybridConfig = field(default_factory=HybridConfig)
    rerank: RerankConfig = field(default_factory=RerankConfig)
    # LM tokens spent on retrieved text at most; lower-ranked chunks are dropped beyond it.
    max_context_tokens: int = 1500
    # Field holding the text of each record in `.jsonl` documents.
    jsonl_text_field: str = "text"
    # Bounds on one document: larger files are skipped unread, and a document whose extracted text is
    # longer is skipped after reading (both reported by name). They keep one file from taking the memory.
    max_file_mb: float = 200.0
    max_text_mb: float = 20.0
    # Bounds on a document's structure, checked while it is read (so a small file that expands, such as a
    # zip of repeated text or a PDF page tree listing one page many times, is refused before it is whole):
    # pages of a .pdf, XML elements of a .docx (paragraphs, runs, table cells...: a time bound, the reader
    # holds text, not elements), tags of an .html file (counted before it is parsed: the parsed tree takes
    # about a kilobyte per tag), and sections of any document (.jsonl records, headed sections of .md,
    # .html and .docx).
    max_pages: int = 5000
    max_docx_elements: int = 2_000_000
    max_html_tags: int = 300_000
    max_sections: int = 100_000
    # Every rag and hybrid answer streams as it is generated and ends with its support verdict (supported,
    # partly, unsupported: rag/attribution.py), shown beside it. true: answer "not in the documents"
    # (rag.prompt.NOT_FOUND, `refused: true`) instead of any answer found unsupported (`partly` is shown);
    # the answer is then held back until it is checked (no token streaming). Off by default: on real
    # questions the check flags more right answers than it should withhold (docs/trust.md).
    refuse_unsupported: bool = False
    # The marker an answer that cites nothing gets: "attribution" cites the source that supports most of its
    # sentences (rag/attribution.py: string matching, no model call); "likelihood" the source after which the
    # model finds its own answer likeliest (one scoring pass per retrieved source).
    citation: Citation = "attribution"
    # How much of an answer sentence's key words (besides its numbers and names, which must all appear, and
    # at least one of its terms) a retrieved passage must hold to support it (rag/attribution.py). 0, chosen on
    # a calibration set of real questions: higher shares flag more right answers (docs/trust.md).
    support_share: float = 0.0
    # An answer is `unsupported` when the chance that the retrieved passages answer the question at all is below
    # this (rag/question_match.py: a logistic model of their closest sentence's cosine similarity to the question,
    # one encode of those sentences after the answer, and the question's names and key terms they hold). 0.25,
    # chosen on a calibration set of real questions for the packaged embedder; another embedder needs its own
    # value, 0 is off.
    question_match: float = 0.25  # rag.question_match.DEFAULT_FLOOR
    # How a follow-up ("when was he born?") becomes the query retrieval searches with (rag/followup.py): "lm"
    # has the answering model rewrite it from the earlier turns (greedy, at most followup_max_tokens; the rules
    # when it fails or says nothing usable), "rules" adds the names of the earlier question after it (no model
    # call), "off" searches with the follow-up as written. A question with no earlier user turn is never
    # rewritten. rules by default: on squad-long follow-ups (docs/retrieval.md, test split) they found the
    # article every time (86% as written) and the evidence about as often as written (86% vs 84%), while the
    # default 0.5B LM lost evidence (78%: it puts in other names from the conversation) and took 1.5 s each.
    followup: Literal["lm", "rules", "off"] = "rules"
    # Most tokens the LM rewriter may write; a rewrite cut off at this length is replaced by the rules' rewrite.
    followup_max_tokens: int = 48

    def __post_init__(self) -> None:
        check(self.chunk_tokens >= 16, "rag.chunk_tokens", f"should be at least 16, got {self.chunk_tokens}")
        check(
            0 <= self.chunk_overlap < self.chunk_tokens,
            "rag.chunk_overlap",
            f"should be >= 0 and below rag.chunk_tokens ({self.chunk_tokens}), got {self.chunk_overlap}",
        )
        check(self.top_k > 0, "rag.top_k", f"should be positive, got {self.top_k}")
        check(0 <= self.support_share <= 1, "rag.support_share", f"should be in [0, 1], got {self.support_share}")
        check(
            0 <= self.question_match <= 1,
            "rag.question_match",
            f"should be in [0, 1] (a chance; 0 turns the check off), got {self.question_match}",
        )
        check(-1 <= self.min_score <= 1, "rag.min_score", f"should be in [-1, 1], got {self.min_score}")
        check(self.candidates > 0, "rag.candidates", f"should be positive, got {self.candidates}")
        check(
            self.followup_max_tokens > 0,
            "rag.followup_max_tokens",
            f"should be positive, got {self.followup_max_tokens}",
        )
        check(
            self.max_context_tokens > 0, "rag.max_context_tokens", f"should be positive, got {self.max_context_tokens}"
        )
        for key in ("max_file_mb", "max_text_mb"):
            value = getattr(self, key)
            check(0 < value < float("inf"), f"rag.{key}", f"should be a positive number, got {value}")
        for key in ("max_pages", "max_docx_elements", "max_html_tags", "max_sections"):
            value = getattr(self, key)
            check(value > 0, f"rag.{key}", f"should be positive, got {value}")
