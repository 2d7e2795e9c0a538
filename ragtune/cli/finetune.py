"""`ragtune train`, `ragtune adapters ...` and `ragtune data ...` (synth, raft, dataset imports): the
fine-tuning half of the CLI."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from models.config import Config
from models.errors import InputError
from ragtune.cli.common import Subcommands, add_command, add_group, add_out, add_paths
from ragtune.data import importers


@dataclass(frozen=True)
class Importer:
    """A `data import-*` action: a public dataset in, a docs folder and question/training files out."""

    run: Callable[[Path, Path], dict[str, int]]  # (source, out) -> counts to print
    help: str
    description: str
    source_metavar: str
    source_help: str | None = None


IMPORTERS = {
    "import-squad": Importer(
        importers.import_squad,
        help="a SQuAD-shaped JSON file -> docs/ + questions.jsonl",
        description="One .txt document per article (paragraphs joined) and every answer text of each answerable "
        "question; unanswerable questions are counted and left out.",
        source_metavar="FILE.json",
    ),
    "import-pubmedqa": Importer(
        importers.import_pubmedqa,
        help="PubMedQA (PQA-L) -> docs/, questions.jsonl, train.jsonl",
        description="Documents are the CONTEXTS only (never the conclusion, which states the answer); questions are "
        "the 500 official test ids with choices yes/no/maybe; train.jsonl pairs the other 500 ids with their decision.",
        source_metavar="DIR",
        source_help="folder holding ori_pqal.json and test_ground_truth.json",
    ),
}


TRAIN_DESCRIPTION = """\
--target adapter (default): train the LM on JSONL (prompt/completion, chat messages, Alpaca) or raw documents
(.txt, .md, {"text": ...} JSONL). Hyper-parameters come from the finetune section: --set finetune.max_steps=50,
--set finetune.lora.r=16, --set finetune.method=full. Checkpoints every finetune.save_every steps.

--target embedder: train the retriever's embedder (embedder.model) on a folder of documents alone, no questions
needed. Each chunk writes its own training query (finetune.embedder.queries: sentence, keyphrase or lm) and a
look-alike passage of another document is its hard negative; at most finetune.embedder.max_chunks chunks, about
10 minutes on 2 CPU cores with the defaults. Then ingest again with it (--set embedder.model=NAME) and measure it
against the packaged one with `ragtune eval --retrieval-only --embedders`.
"""

TRAIN_EPILOG = """\
examples:
  ragtune train --data train.jsonl --name library-v1 --set finetune.max_steps=30
  ragtune train --target embedder --docs ./manuals --name manuals-emb
  ragtune eval --retrieval-only --questions q.jsonl --docs ./manuals --embedders minilm-l6 manuals-emb
  ragtune ingest --rebuild ./manuals --set embedder.model=manuals-emb
"""


def add_parsers(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "train",
        help="train a LoRA adapter (or the full model) on a training file, or the retriever's embedder on documents",
        description=TRAIN_DESCRIPTION,
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--target",
        choices=["adapter", "embedder"],
        default="adapter",
        help="what to train: a LoRA adapter / full model for the LM (default) or the retriever's embedder",
    )
    p.add_argument("--data", type=Path, metavar="FILE", help="--target adapter: the training file")
    p.add_argument(
        "--docs", nargs="+", type=Path, metavar="PATH", help="--target embedder: folders or files of documents"
    )
    p.add_argument(
        "--name",
        required=True,
        help="what to call the result: a folder under $RAGTUNE_HOME/adapters, or $RAGTUNE_HOME/embedders",
    )
    p.add_argument("--resume", action="store_true", help="continue the run NAME from its last complete checkpoint")
    _add_adapters_parser(sub)
    _add_data_parser(sub)


def _add_adapters_parser(sub: Subcommands) -> None:
    adapters = add_group(sub, "adapters", help="list, show, prepare, remove or export trained adapters")
    add_command(adapters, "list", help="adapters with their base model and metrics").add_argument(
        "--json", action="store_true"
    )
    add_command(adapters, "show", help="an adapter's full manifest").add_argument("name")
    add_command(
        adapters,
        "prepare",
        help="write the GGUF LoRA llama.cpp needs: once, for an adapter saved without one (trained before GGUF "
        "LoRAs, or its conversion failed), when `ask` on a GGUF model says so",
        description="Converts the adapter's PEFT LoRA into a GGUF LoRA for the GGUF it was trained from (else "
        "llm.model) and lists it in the adapter's manifest; answering only reads adapters, so this runs first. "
        "An adapter that already has its GGUF LoRA is verified and left as it is.",
    ).add_argument("name")
    add_command(adapters, "rm", help="delete an adapter").add_argument("name")
    p = add_command(
        adapters,
        "export",
        help="write base + adapter merged into one model folder, or the adapter as vLLM serves it",
        description="--merge: one standalone model folder (base + LoRA weights folded in). --for vllm: the PEFT "
        "adapter folder for `vllm serve BASE --enable-lora --lora-modules NAME=DIR`, and that command printed.",
    )
    p.add_argument("name")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--merge", action="store_true", help="merge the LoRA weights into the base")
    how.add_argument("--for", dest="target", choices=["vllm"], help="the adapter folder a server loads")
    p.add_argument(
        "--base",
        metavar="MODEL",
        help="--for vllm: the base model as vLLM will load it (a hub id or a folder on the serving machine; "
        "default: the local base the adapter was trained on)",
    )
    add_out(p, "DIR", "new, empty output folder")


def _add_data_parser(sub: Subcommands) -> None:
    data = add_group(sub, "data", help="make training data")
    p = add_command(
        data,
        "synth",
        help="generate grounded question/answer pairs from documents with the local LM",
        description="Chunks the documents like `ingest`, asks the LM for question/answer pairs per chunk, keeps "
        "pairs whose answer is grounded in the chunk. Resumable: re-run the same command after an interruption.",
    )
    add_paths(p, "folders or files of documents")
    add_out(p, "FILE", "output JSONL (prompt/completion)")
    p.add_argument("--pairs", type=int, default=3, help="pairs asked for per chunk (default 3)")
    p.add_argument("--paraphrases", type=int, default=0, help="extra rephrasings per kept question (default 0)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N chunks (quick trials)")
    p = add_command(
        data,
        "raft",
        help="turn synthesised pairs into RAFT examples for hybrid mode",
        description="Each pair becomes a chat example whose prompt is the RAG prompt with its source chunk "
        "(in finetune.raft_oracle_fraction of examples) and finetune.raft_distractors unrelated chunks. A pair "
        "names its source as `chunk` (as `data synth` writes) or `doc` (a path relative to the first --docs "
        "folder, as the importers write): then its chunk closest to the question is the source.",
    )
    p.add_argument("pairs", type=Path, metavar="PAIRS", help="output of `ragtune data synth`, or pairs naming a doc")
    p.add_argument("--docs", nargs="+", required=True, metavar="PATH", help="the documents synth used")
    add_out(p, "FILE", "output chat JSONL")
    for name, importer in IMPORTERS.items():
        p = add_command(data, name, help=importer.help, description=importer.description)
        p.add_argument("source", type=Path, metavar=importer.source_metavar, help=importer.source_help)
        add_out(p, "DIR", "new, empty output folder")


def cmd_train(args: argparse.Namespace, config: Config) -> int:
    if args.target == "embedder":
        return train_embedder(args, config)
    if args.data is None:
        raise InputError("ragtune train --target adapter needs --data FILE (a JSONL training file or documents)")
    from finetune.train import train

    result = train(config, args.data, args.name, resume=args.resume)
    eval_part = f", eval loss {result.eval_loss:.4f}" if result.eval_loss is not None else ""
    print(
        f"trained {result.name}: {result.steps} steps, train loss {result.train_loss:.4f}{eval_part}, "
        f"{result.seconds:.0f}s, {result.tokens_per_s:.0f} tokens/s, peak RAM {result.peak_rss_mb:.0f} MiB, "
        f"{result.trainable_params:,} trainable of {result.total_params:,} parameters"
    )
    print(f"adapter: {result.path}")
    print(f'use it:  ragtune ask --set mode=finetune --set finetune.adapter={result.name} "..."')
    return 0


def train_embedder(args: argparse.Namespace, config: Config) -> int:
    if not args.docs:
        raise InputError("ragtune train --target embedder needs --docs PATH (folders or files of documents)")
    from ragtune.embedder_training import train_embedder_on_docs

    done = train_embedder_on_docs(config, args.docs, args.name, resume=args.resume)
    run = done.training
    print(
        f"trained embedder {done.name}: {run.steps} steps on {run.triples} queries from {done.used} of {done.chunks} "
        f"chunks, loss {run.loss:.4f}, queries {done.queries_seconds:.0f}s, training {run.seconds:.0f}s, "
        f"peak RAM {run.peak_rss_mb:.0f} MiB"
    )
    print(f"embedder: {done.path}")
    print(f"use it:   ragtune ingest --rebuild --set embedder.model={done.name} PATH...")
    print(f"measure:  ragtune eval --retrieval-only --embedders {config.embedder.model} {done.name} QUESTIONS")
    return 0


def cmd_adapters(args: argparse.Namespace, config: Config) -> int:
    from finetune.adapters import list_adapters, read_adapter, remove_adapter

    action = args.adapters_command
    if action == "list":
        found = list_adapters()
        if args.json:
            print(json.dumps([{"name": a.name, "path": str(a.path), **a.manifest} for a in found], indent=2))
            return 0
        for a in found:
            metrics = a.manifest.get("metrics", {})
            print(
                f"{a.name:24} {a.manifest.get('method', '?'):5} base={a.manifest.get('base_model')} "
                f"steps={metrics.get('steps')} train_loss={metrics.get('train_loss', float('nan')):.4f}"
            )
        if not found:
            print("no adapters yet; train one with `ragtune train --data FILE --name NAME`")
        return 0
    if action == "show":
        print(json.dumps(read_adapter(args.name).manifest, indent=2))
        return 0
    if action == "rm":
        print(f"removed {remove_adapter(args.name)}")
        return 0
    if action == "prepare":
        return prepare(args.name, config)
    if args.target == "vllm":
        from finetune.export import export_for_vllm

        done = export_for_vllm(args.name, args.out, args.base)
        print(f"exported {done.folder} (base_model_name_or_path: {done.base})")
        print(f"serve it: {done.command}")
        print(
            f"use it:   ragtune ask --set llm.backend=openai --set llm.base_url=http://HOST:8000/v1 "
            f'--set llm.served_model={done.base} --set mode=finetune --set finetune.adapter={args.name} "..."'
        )
        return 0
    return export(args.name, args.out, config)


def prepare(name: str, config: Config) -> int:
    from finetune.gguf_export import prepare_adapter

    done = prepare_adapter(name, config.llm.model, note=lambda text: print(text, file=sys.stderr, flush=True))
    state = "converted" if done.converted else "already had its GGUF LoRA"
    print(f"adapter {name}: {state}, verified for {done.base}")
    print(f'use it:  ragtune ask --set llm.model={done.model} --set mode=finetune --set finetune.adapter={name} "..."')
    return 0


def export(name: str, out: Path, config: Config) -> int:
    from finetune.adapters import apply_adapter, export_merged, read_adapter
    from models.loading import load_lm

    read_adapter(name)
    lm = load_lm(replace(config.llm, dtype="float32"))  # merge in full precision
    model = apply_adapter(lm.model, lm.path, name)
    print(f"exported {export_merged(model, lm.tokenizer, out)}")
    return 0


def cmd_data(args: argparse.Namespace, config: Config) -> int:
    if args.data_command in IMPORTERS:
        counts = IMPORTERS[args.data_command].run(args.source, args.out)
        print(", ".join(f"{key.replace('_', ' ')} {value}" for key, value in counts.items()) + f" -> {args.out}")
        return 0
    from models.embedders import build_embedder
    from ragtune.data.corpus import document_chunks

    embedder = build_embedder(config.embedder)
    chunks = document_chunks(args.paths if args.data_command == "synth" else args.docs, config, embedder)
    if args.data_command == "raft":
        from ragtune.data.raft import build_raft

        docs_root = Path(args.docs[0]) if Path(args.docs[0]).is_dir() else None
        summary = build_raft(args.pairs, chunks, args.out, config.finetune, docs_root=docs_root, embedder=embedder)
        print(
            f"{summary.examples} RAFT examples ({summary.with_oracle} with their source chunk, "
            f"{summary.distractors} distractors each) -> {args.out}"
        )
        return 0
    from finetune.synth import synthesize
    from ragtune.compose import build_generator

    chunks = chunks[: args.limit] if args.limit else chunks
    generator = build_generator(replace(config, mode="rag"))  # synthesise with the base model
    summary = synthesize(
        chunks, generator, args.out, pairs_per_chunk=args.pairs, paraphrases=args.paraphrases, seed=config.finetune.seed
    )
    print(
        f"{summary.kept} pairs kept of {summary.generated} generated ({summary.rejected} rejected) "
        f"from {summary.chunks} chunks in {summary.seconds:.0f}s -> {args.out}"
    )
    return 0


COMMANDS = {"train": cmd_train, "adapters": cmd_adapters, "data": cmd_data}
