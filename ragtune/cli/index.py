"""`ragtune ingest`, `ragtune ask` and `ragtune docs ...`: build the index, answer from it, see what it holds."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from models.config import Config
from models.text import printable
from ragtune.cli.common import Subcommands, add_command, add_group, add_paths, display, relative


def add_parsers(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "ingest",
        help="chunk, embed and index documents (re-runs touch only changes)",
        description="Index every .txt .md .html .pdf .docx .jsonl file under the given folders. "
        "Unchanged files are skipped, changed ones re-embedded, deleted ones removed.",
    )
    add_paths(p, "folders or files to index")
    p.add_argument("--rebuild", action="store_true", help="start a fresh index instead of updating the current one")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = add_command(
        sub,
        "ask",
        help="answer a question from the indexed documents",
        description="Retrieve the best chunks, answer with the LM and cite the sources as [n].",
    )
    p.add_argument("question", help="the question, in quotes")
    p.add_argument(
        "--json", action="store_true", help="print one JSON object: answer, sources (path, chunk, score), timings"
    )

    docs = add_group(sub, "docs", help="list or remove indexed documents")
    add_command(docs, "list", help="documents in the index with their chunk counts").add_argument(
        "--json", action="store_true"
    )
    p = add_command(docs, "rm", help="remove documents from the index")
    add_paths(p, "paths as `docs list` shows them")


def cmd_ingest(args: argparse.Namespace, config: Config) -> int:
    from ragtune.python_api import Ragtune

    # Progress bars only for a person at a terminal (as before: the library's own default).
    summary = Ragtune(config, progress=None).ingest(args.paths, rebuild=args.rebuild)
    if args.json:
        print(json.dumps(vars(summary), indent=2))
        return 0
    for path, reason in summary.skipped:
        print(f"skipped {display(path)}: {printable(reason)}", file=sys.stderr)
    print(summary.line())
    return 0


def cmd_ask(args: argparse.Namespace, config: Config) -> int:
    from models.answer import AnswerBuilder, Token
    from models.generate import resolve_backend
    from ragtune.python_api import Ragtune

    rt = Ragtune(config, progress=not args.json)
    if args.json:
        answer = rt.ask(args.question)
        data = answer.to_json()
        data["mode"] = config.mode
        data["backend"] = resolve_backend(config.llm)  # the engine that ran (llm.backend with auto resolved)
        for source in data["sources"]:
            source["path"] = relative(source["path"])  # JSON escapes what a terminal must not see raw
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    built = AnswerBuilder(args.question)
    for event in rt.events(args.question):
        if isinstance(built.add(event), Token):
            print(event.text, end="", flush=True)
    print()
    print_sources(built.answer)
    return 0


def support_line(answer: Any) -> str | None:
    """The answer's support verdict in words, for under the answer (None for a refusal or a closed-book mode)."""
    if answer.refused or answer.support is None:
        return None
    total = len(answer.sentences)
    held = sum(s.support == "supported" for s in answer.sentences)
    backing = ", ".join(f"[{n}]" for n in answer.supports)
    if answer.support == "supported":
        return f"Supported: every sentence is found in the sources ({backing})."
    if answer.support == "partly":
        found = f" ({backing})" if backing else ""
        return f"Partly supported: {held} of {total} sentences found in the sources{found}; check the others."
    if held or any(s.support == "partly" for s in answer.sentences):  # its sentences are there, the question is not
        return (
            "Not supported: the retrieved sources do not cover what the question asks; check it before relying on it."
        )
    return "Not supported: no sentence of this answer is found in the retrieved sources; check it before relying on it."


def print_sources(answer: Any) -> None:
    """The support verdict and the numbered sources under a streamed answer (* marks the cited ones), then the
    timings on stderr."""
    if (line := support_line(answer)) is not None:
        print(f"\n{line}")
    if not answer.sources:
        return
    print("\nSources:")
    for s in answer.sources:
        where = f", {s.locator}" if s.locator else ""
        mark = "*" if s.number in answer.cited else " "
        backs = ", supports the answer" if s.number in answer.supports else ""
        print(f" {mark}[{s.number}] {display(s.path)} (chunk {s.chunk}{where}, score {s.score:.2f}{backs})")
    timings = answer.timings
    if "first_token_s" in timings:
        print(
            f"\nfirst token {timings['first_token_s']:.2f}s, total {timings['total_s']:.2f}s, "
            f"{timings.get('tokens_per_s', 0):.1f} tokens/s",
            file=sys.stderr,
        )


def cmd_docs(args: argparse.Namespace, config: Config) -> int:
    from models.embedders import build_embedder
    from models.paths import index_dir
    from rag.ingest import remove_documents
    from rag.retrieve import CurrentIndex

    embedder = build_embedder(config.embedder)
    if args.docs_command == "rm":
        for path in remove_documents(args.paths, config, embedder.dim):
            print(f"removed {display(path)}")
        return 0
    snapshot = CurrentIndex(index_dir(config), config, embedder.dim).snapshot()
    documents = snapshot.store.documents()
    if args.json:
        print(json.dumps([vars(d) for d in documents], indent=2))
        return 0
    for doc in documents:
        print(f"{doc.chunks:6d} chunks  {doc.sha256[:12]}  {display(doc.path)}")
    print(f"{len(documents)} documents, {snapshot.index.count} chunks, generation {snapshot.generation}")
    return 0


COMMANDS = {"ingest": cmd_ingest, "ask": cmd_ask, "docs": cmd_docs}
