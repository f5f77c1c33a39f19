"""The W1 prompt step with every core busy: how much slower the client gets under contention.

    python benchmarks/under_load.py                  # trace mode, batch 64, 3 runs each way
    python benchmarks/under_load.py --batch 16 --runs 5 --peer

Runs W1 (``run_tracegrad.py``, concurrency ceiling = batch) against the benchmark server at
200 ms, first on a quiet machine, then with one busy-looping process per core started
beside it (what a user's other work, or a test suite, does to the client). ``--peer`` also
runs trace-opt the same way, for a latency-bound reference. Prints the wall time of the
measured step of each run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run_all  # noqa: E402
from server import BenchServer  # noqa: E402


def walls(server: BenchServer, name: str, batch: int, runs: int) -> list[float]:
    cfg = (run_all.large_config(name, batch) if name.startswith("tracegrad")
           else dict(run_all.CONFIGS[name]))
    out = []
    for _ in range(runs):
        res = run_all.run_one(server, name, cfg, workloads="w1", steps=2, batch1=batch)
        out.append(round((run_all.aggregate([res], "w1") or {})["wall_s"], 3))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mode", default="trace", choices=("textual", "batched", "trace"))
    ap.add_argument("--peer", action="store_true", help="also run trace-opt")
    args = ap.parse_args()
    names = [f"tracegrad {args.mode}"] + (["trace-opt"] if args.peer else [])
    with BenchServer(0.2) as server:
        quiet = {n: walls(server, n, args.batch, args.runs) for n in names}
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(os.cpu_count() or 1)]
        try:
            busy = {n: walls(server, n, args.batch, args.runs) for n in names}
        finally:
            for h in hogs:
                h.kill()
    print(f"| framework | batch | quiet: wall s per run | {len(hogs)} busy cores: wall s per run |")
    print("|---|--:|---|---|")
    for n in names:
        print(f"| {n} | {args.batch} | {', '.join(map(str, quiet[n]))} | "
              f"{', '.join(map(str, busy[n]))} |")


if __name__ == "__main__":
    main()
