"""Relay bulk throughput: ``sockit relay`` in the shared kit's ``bulk.py``, same run as
socat, HAProxy and the Python relays.

The kit (``../shared/bench``, set up once with its ``./setup.sh``) sends 1 MiB writes from
a C sender through each relay to a C sink for ``--seconds`` per sample, pins the relay
and sink to CPU 0 and the sender to CPU 1, interleaves contenders per round, and checks
each relay's integrity (sha256 of 32 MiB) and half-close. This script only plugs in
``sockit relay`` twice (the splice path and ``--no-splice``) and forwards its arguments:

    python benchmarks/bench_relay.py [--reps 3] [--only 'socat*,haproxy*,py-*,sockit*']

The DESIGN.md goal: throughput >= 0.40 of ``direct-c``, relay CPU <= 0.20 s per GB.
Results and their reading are in docs/benchmarks.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

_KIT = Path(__file__).resolve().parent.parent.parent / "shared" / "bench"


def main(argv: list[str]) -> int:
    """Run the kit's bulk.py with the sockit contenders; its exit status."""
    bulk = _KIT / "bulk.py"
    if not bulk.exists():
        sys.stderr.write(f"bench_relay: the benchmark kit is not at {_KIT}; skipped\n")
        return 0
    sockit = shutil.which("sockit", path=str(Path(sys.executable).parent)) or "sockit"
    relay = "tcp-listen:{host}:{listen_port} tcp:{target_host}:{target_port}"
    args = [
        sys.executable,
        str(bulk),
        "--contender",
        f"sockit={sockit} relay {relay}",
        "--contender",
        f"sockit-copy={sockit} relay --no-splice {relay}",
        *(argv or ["--reps", "3"]),
    ]
    return subprocess.call(args, cwd=_KIT, env=os.environ.copy())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
