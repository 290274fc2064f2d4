"""profd's benchmarks: one script per question (see bench/README.md)."""
