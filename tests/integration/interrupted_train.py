"""scripts/train_adapter.py, except that every process stops dead right after the checkpoint of step STOP_AT.

Launched by the tests (under `accelerate launch` too) to interrupt a run where a crash would: after a
checkpoint is complete on disk, before the next step.
"""

import os
import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import finetune.train as trainer  # noqa: E402

_real = trainer.evaluate_and_checkpoint


def _checkpoint_then_stop(run, bar):  # type: ignore[no-untyped-def]
    seconds = _real(run, bar)
    if run.step == int(os.environ["STOP_AT"]):
        os._exit(3)  # no cleanup, like a killed process; every process reaches this after the same barrier
    return seconds


trainer.evaluate_and_checkpoint = _checkpoint_then_stop
runpy.run_path(str(REPO / "scripts" / "train_adapter.py"), run_name="__main__")
