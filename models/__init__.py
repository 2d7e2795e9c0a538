"""Shared layer of ragtune: config, model loading, generation, storage and errors."""

import os

# OpenMP threads (torch's and llama.cpp's share one libgomp, which reads this once, when it loads) sleep when
# they wait instead of spinning. A spinning thread holds its core, so on a machine whose cores other
# processes also use, every barrier waits for a descheduled spinner: on 2 busy cores llama.cpp decoded
# SmolLM2-135M at 1.1 tokens/s spinning and 13-37 passive, transformers 1.0-1.7 against 2.9-6.6.
# Set OMP_WAIT_POLICY=active to spin on cores of your own.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
