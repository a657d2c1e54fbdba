"""Start-up time of ``sockit --version`` (and ``import sockit``) as a ratio to
``python -c pass`` measured in the same run, interleaved (the machine is shared and
noisy: only ratios within one run mean anything).

Usage: ``python3 benchmarks/bench_startup.py [--runs 40]`` from the repository, after
``python3 dev.py setup`` (it runs the ``.venv`` interpreter and console script).
The goal (DESIGN.md, issue 5): ``sockit --version`` at most 2.5x ``python -c pass``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"


def commands() -> dict[str, list[str]]:
    python = str(VENV_BIN / "python")
    return {
        "python -c pass": [python, "-c", "pass"],
        "python -c 'import sockit'": [python, "-c", "import sockit"],
        "sockit --version": [str(VENV_BIN / "sockit"), "--version"],
        "python -m sockit --version": [python, "-m", "sockit", "--version"],
    }


def measure(runs: int) -> dict[str, list[float]]:
    """``runs`` rounds; each round runs every command once (interleaved)."""
    table = commands()
    times: dict[str, list[float]] = {name: [] for name in table}
    for argv in table.values():  # warm the page cache and .pyc files
        subprocess.run(argv, check=True, capture_output=True)
    for _ in range(runs):
        for name, argv in table.items():
            started = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            times[name].append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="rounds (default 40)")
    runs = parser.parse_args().runs
    if not (VENV_BIN / "sockit").exists():
        sys.stderr.write("bench_startup: no .venv/bin/sockit; run `python3 dev.py setup`\n")
        return 2
    times = measure(runs)
    base = statistics.median(times["python -c pass"])
    print(f"{runs} interleaved runs each, median wall time")
    print("| what | median | ratio to `python -c pass` |\n|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median * 1000:.1f} ms | {median / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
