"""`python -m bench [--quick]`: runs every benchmark and prints the table the README quotes."""

from __future__ import annotations

import argparse
import platform
import sys
import time

from bench import cycle, matching, memory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer items and rules (a smoke run)")
    args = parser.parse_args(argv)
    print(f"# feedwatch benchmarks · Python {platform.python_version()} · {platform.machine()}")
    print()
    started = time.perf_counter()
    matching.run(quick=args.quick)
    cycle.run(quick=args.quick)
    memory.run(quick=args.quick)
    print(f"(benchmarks took {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
