"""`ragtune serve`: the OpenAI-compatible local API and chat page, with --host/--port/--api-key-file over serve.*."""

from __future__ import annotations

import argparse
from dataclasses import replace

from models.config import Config
from ragtune.cli.common import Subcommands, add_command


def add_parsers(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "serve",
        help="OpenAI-compatible local API and chat page",
        description="Serve base, rag, finetune:NAME and hybrid:NAME as OpenAI chat models, plus embeddings, "
        "files and fine-tuning jobs. Every route but /health and the chat page needs `Authorization: Bearer KEY`.",
    )
    p.add_argument("--host", help="bind address (default serve.host, 127.0.0.1); others need --api-key-file")
    p.add_argument("--port", type=int, help="port (default serve.port, 8000)")
    p.add_argument("--api-key-file", help="file holding the API key (default: make one in $RAGTUNE_HOME/serve)")


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from ragtune.serve.server import serve

    # A flag given on the command line wins over the config's serve section.
    overrides = {"host": args.host, "port": args.port, "api_key_file": args.api_key_file}
    serve_config = replace(config.serve, **{k: v for k, v in overrides.items() if v is not None})
    return serve(replace(config, serve=serve_config))


COMMANDS = {"serve": cmd_serve}
