"""One worked case for the refusal sentence in the prompt: a short kiln manual whose retrieved passages hold
the answer, asked with each system prompt bench/support_set.py measures (shipped, without, reworded).

The manual is written here (a made-up product), so the case needs no download; the answer is the rag path's,
default models and settings, nothing withheld.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

from bench.common import loadavg, say, table

QUESTION = "What does error code E7 mean on the Brenner K-40 kiln?"
MANUAL = """Brenner K-40 Electric Kiln: Operating Manual

Installation. Place the kiln at least 45 cm from any wall on a non-combustible floor. The K-40 needs a
dedicated 32 A circuit; do not use an extension cord.

Loading. Stack shelves on three posts each. Keep ware 2 cm from the elements. Never fire greenware and
glazed ware on the same shelf.

Firing programs. Program P1 is a bisque firing to 1000 degrees C; program P2 a glaze firing to 1240
degrees C. A firing takes 8 to 11 hours; the lid stays locked until the kiln is below 200 degrees C.

Error codes. The display shows a code when a firing stops. Error code E1 means the thermocouple is
broken. Error code E4 means the kiln heats slower than 10 degrees per hour. Error code E7 means the door
switch is open: close the lid firmly and press START to resume. Error code E9 means the controller is
too hot; let it cool for an hour.

Maintenance. Vacuum the firing chamber after every tenth firing and replace the thermocouple every two
years.
"""


def main(argv: list[str] | None = None) -> int:
    import argparse

    import rag.prompt
    from bench.support_set import prompt_variants
    from models.answer import collect
    from models.config import load_config
    from models.embedders import build_embedder
    from rag.ingest import ingest
    from ragtune.compose import build_answerer, quiet_libraries

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args(argv)
    quiet_libraries()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        os.environ["RAGTUNE_HOME"] = str(Path(folder) / "home")
        docs = Path(folder) / "docs"
        docs.mkdir()
        (docs / "brenner-k40-manual.txt").write_text(MANUAL, encoding="utf-8")
        config = load_config(None, args.set)
        embedder = build_embedder(config.embedder)
        ingest([docs], config, embedder, progress=False)
        answerer = build_answerer(replace(config, mode="rag"), embedder=embedder, progress=False)
        for name, prompt in prompt_variants().items():
            rag.prompt.SYSTEM_PROMPT = prompt  # this process only: the variant build_messages reads
            answer = collect(QUESTION, answerer.events(QUESTION))
            shown = answer.text.replace("\n", " ").replace("|", "/")
            flat = {s.number: " ".join(s.text.split()) for s in answer.sources}  # the manual's lines rejoined
            holding = [f"[{n}]" for n, text in flat.items() if "E7 means the door switch" in text]
            found = ", ".join(holding) or "none"
            rows.append([name, found, "yes" if answer.refused else "no", answer.support or "-", shown])
    say(f"Question: {QUESTION} (load average {loadavg()})")
    say(table("system prompt | sources holding the answer | refused | verdict | answer", rows))
    return 0
