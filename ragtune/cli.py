"""The `ragtune` command: ingest documents, ask questions, manage the index and the packaged models."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from models.config import Config, load_config, to_yaml
from models.errors import RagtuneError
from ragtune import cli_compare, cli_finetune

EPILOG = """\
examples:
  ragtune ingest examples/docs
  ragtune ask "How much does a non-resident library card cost?"
  ragtune ask --json "When is the library closed?"
  ragtune ask --set rag.top_k=8 --set llm.model=smollm2-135m-instruct "..."
  ragtune docs list
  ragtune docs rm examples/docs/old-policy.md
  ragtune data synth examples/docs -o train.jsonl
  ragtune train --data train.jsonl --name library-v1 --set finetune.max_steps=60
  ragtune ask --set mode=finetune --set finetune.adapter=library-v1 "..."
  ragtune ask --set mode=hybrid --set finetune.adapter=library-v1 "..."

Data (indexes, adapters) lives in $RAGTUNE_HOME (default ~/.local/share/ragtune);
materialised models in $RAGTUNE_CACHE (default ~/.cache/ragtune). Nothing is downloaded.
"""


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="YAML",
        default=os.environ.get("RAGTUNE_CONFIG"),
        help="config file (default: $RAGTUNE_CONFIG, else built-in defaults = configs/default.yaml)",
    )
    common.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override one config key, e.g. --set rag.top_k=8 (repeatable)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="ragtune",
        description="Answer questions about your own documents, offline.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from ragtune import __version__

    parser.add_argument("--version", action="version", version=f"ragtune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "ingest",
        parents=[common],
        help="chunk, embed and index documents (re-runs touch only changes)",
        description="Index every .txt .md .html .pdf .docx .jsonl file under the given folders. "
        "Unchanged files are skipped, changed ones re-embedded, deleted ones removed.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="folders or files to index")
    p.add_argument("--rebuild", action="store_true", help="start a fresh index instead of updating the current one")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = sub.add_parser(
        "ask",
        parents=[common],
        help="answer a question from the indexed documents",
        description="Retrieve the best chunks, answer with the LM and cite the sources as [n].",
    )
    p.add_argument("question", help="the question, in quotes")
    p.add_argument(
        "--json", action="store_true", help="print one JSON object: answer, sources (path, chunk, score), timings"
    )

    docs = sub.add_parser("docs", help="list or remove indexed documents").add_subparsers(
        dest="docs_command", required=True, metavar="ACTION"
    )
    p = docs.add_parser("list", parents=[common], help="documents in the index with their chunk counts")
    p.add_argument("--json", action="store_true")
    p = docs.add_parser("rm", parents=[common], help="remove documents from the index")
    p.add_argument("paths", nargs="+", metavar="PATH", help="paths as `docs list` shows them")

    models = sub.add_parser("models", help="packaged models: list, prepare once, verify").add_subparsers(
        dest="models_command", required=True, metavar="ACTION"
    )
    models.add_parser("list", parents=[common], help="the packaged presets and whether they are installed")
    p = models.add_parser(
        "prepare", parents=[common], help="materialise the configured LM now (GGUF -> safetensors, done once)"
    )
    p = models.add_parser("verify", parents=[common], help="re-hash every materialised model file")

    cli_finetune.add_parsers(sub, common)
    cli_compare.add_parsers(sub, common)

    p = sub.add_parser(
        "serve",
        parents=[common],
        help="OpenAI-compatible local API and chat page",
        description="Serve base, rag, finetune:NAME and hybrid:NAME as OpenAI chat models, plus embeddings, "
        "files and fine-tuning jobs. Every route but /health and the chat page needs `Authorization: Bearer KEY`.",
    )
    p.add_argument("--host", help="bind address (default serve.host, 127.0.0.1); others need --api-key-file")
    p.add_argument("--port", type=int, help="port (default serve.port, 8000)")
    p.add_argument("--api-key-file", help="file holding the API key (default: make one in $RAGTUNE_HOME/serve)")

    p = sub.add_parser("config", help="show the resolved config").add_subparsers(
        dest="config_command", required=True, metavar="ACTION"
    )
    p.add_parser("show", parents=[common], help="print the config after --config and --set, as YAML")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        from ragtune.app import quiet_libraries

        quiet_libraries()
        return COMMANDS[args.command](args, config)
    except RagtuneError as exc:
        print(f"ragtune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ragtune: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130


def cmd_ingest(args: argparse.Namespace, config: Config) -> int:
    from models.embedding import build_embedder
    from rag.ingest import ingest

    summary = ingest(args.paths, config, build_embedder(config.embedder), rebuild=args.rebuild)
    if args.json:
        print(json.dumps(vars(summary), indent=2))
        return 0
    for path, reason in summary.skipped:
        print(f"skipped {display(path)}: {reason}", file=sys.stderr)
    print(summary.line())
    return 0


def cmd_ask(args: argparse.Namespace, config: Config) -> int:
    from rag.pipeline import Answer
    from ragtune.app import build_pipeline

    pipeline = build_pipeline(config, progress=not args.json)
    answer = Answer(args.question)
    if args.json:
        for _ in pipeline.stream(args.question, answer):
            pass
        data = answer.to_json()
        data["mode"] = config.mode
        for source in data["sources"]:
            source["path"] = display(source["path"])
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    for piece in pipeline.stream(args.question, answer):
        print(piece, end="", flush=True)
    print()
    print_sources(answer)
    return 0


def print_sources(answer: Any) -> None:
    if not answer.sources:
        return
    print("\nSources:")
    for s in answer.sources:
        where = f", {s.locator}" if s.locator else ""
        mark = "*" if s.number in answer.cited else " "
        print(f" {mark}[{s.number}] {display(s.path)} (chunk {s.chunk}{where}, score {s.score:.2f})")
    timings = answer.timings
    if "first_token_s" in timings:
        print(
            f"\nfirst token {timings['first_token_s']:.2f}s, total {timings['total_s']:.2f}s, "
            f"{timings.get('tokens_per_s', 0):.1f} tokens/s",
            file=sys.stderr,
        )


def cmd_docs(args: argparse.Namespace, config: Config) -> int:
    from models.embedding import build_embedder
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


def cmd_models(args: argparse.Namespace, config: Config) -> int:
    from models.loading import lm_folder, verify_materialised
    from models.paths import cache_home
    from models.presets import PRESETS, piece_paths

    if args.models_command == "list":
        for preset in PRESETS.values():
            try:
                piece_paths(preset)
                state = "installed"
            except RagtuneError:
                state = "missing"
            print(f"{preset.name:30} {preset.kind:9} {state:10} {preset.description}")
        return 0
    if args.models_command == "prepare":
        print(lm_folder(config.llm.model))
        return 0
    found = sorted(p.name for p in (cache_home() / "models").glob("*") if p.is_dir() and not p.name.startswith("."))
    for key in found:
        print(f"ok {verify_materialised(key)}")
    if not found:
        print(f"no materialised models in {cache_home() / 'models'}")
    return 0


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from ragtune.serve.server import serve

    overrides = {"host": args.host, "port": args.port, "api_key_file": args.api_key_file}
    serve_config = replace(config.serve, **{k: v for k, v in overrides.items() if v is not None})
    return serve(replace(config, serve=serve_config))


def cmd_config(args: argparse.Namespace, config: Config) -> int:
    print(to_yaml(config), end="")
    return 0


COMMANDS = {
    "ingest": cmd_ingest,
    "ask": cmd_ask,
    "docs": cmd_docs,
    "models": cmd_models,
    "config": cmd_config,
    "serve": cmd_serve,
    **cli_finetune.COMMANDS,
    **cli_compare.COMMANDS,
}


def display(path: str) -> str:
    """A path relative to the working directory when it lies below it, else absolute."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


if __name__ == "__main__":
    sys.exit(main())
