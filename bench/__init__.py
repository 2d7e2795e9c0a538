"""Every benchmark of ragtune, on its public interfaces; scripts/bench_*.py run them into BENCHMARKS.md."""
