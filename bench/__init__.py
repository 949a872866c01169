"""Benchmarks, separate from the tests: `python -m bench` prints a table of figures measured side by side
in one run (ratios, since the machines are noisy)."""
