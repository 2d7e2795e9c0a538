"""What a compare run has finished so far: the runner fills it in, the report is written from it.

Plain data, so `results` and `report` read a run's state without importing the runner that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.config import Config
from ragtune.compare.spec import CompareSpec


@dataclass
class Progress:
    spec: CompareSpec
    # The config every path ran with; a path that has not run reports this one.
    config: Config
    # Phase name ("index", "train:finetune", "rag", ...) -> the record that phase left.
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Eval phase ("rag", "update:rag:new", ...) -> the folder holding its results.json and answers.jsonl.
    evals: dict[str, Path] = field(default_factory=dict)
    # compare --retriever auto: the folder of the retrieval-only scoring (its results.json) and its record.
    retrieval: dict[str, Any] | None = None
    # Why the run stopped early (Ctrl-C, a failed step); None while it runs or once it finished.
    interrupted: str | None = None
