"""Shared layer of ragtune: config, model loading, generation, storage and errors."""

import os

# How long OpenMP threads (torch's and llama.cpp's libgomp, which reads this once, when it loads) spin
# before they sleep when they wait. llama.cpp waits at a barrier after every operation, hundreds per decoded
# token: sleeping at once (OMP_WAIT_POLICY=PASSIVE) decoded 0.70x as fast as this short spin on idle cores,
# while spinning long (libgomp's default, 300,000 rounds) lets a spinner the scheduler has set aside stall
# every barrier on shared cores: two engine processes side by side decoded 0.24x as fast as sleeping at once
# (this: 0.89x). BENCHMARKS.md, "OpenMP wait" (scripts/bench_rag.py --openmp). A policy of your own
# (OMP_WAIT_POLICY or GOMP_SPINCOUNT set before import) is kept.
OPENMP_SPIN_ROUNDS = "300"
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPIN_ROUNDS)
