"""Run every benchmark under bench/ in turn: ``make bench`` calls this.

Each benchmark is a module with a ``main(argv) -> int`` that prints its own
figures. Results are recorded by hand in docs/benchmarks.md with the machine
they were measured on.
"""

import importlib
import sys

BENCHMARKS = ("bench.check_bench", "bench.baselines_bench", "bench.discovery_bench")


def main() -> int:
    failed = []
    for name in BENCHMARKS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            print(f"== {name}: not present, skipped")
            continue
        print(f"== {name}")
        if module.main([]) != 0:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
