"""Backward through a long chain of ``@tg.op`` functions: time, peak memory, feedback size.

    python benchmarks/chain.py               # 10,000 nodes: textual, batched and trace propagators
    python benchmarks/chain.py --json        # the same as one JSON object (run_all.py reads it)

No LLM call is made (plain functions route feedback without one); what is measured is the
library's own work per node, which must stay linear in the chain's length.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tracegrad as tg  # noqa: E402
from tracegrad.backward import TextualPropagator, TracePropagator  # noqa: E402
from tracegrad.testing import MockLLM  # noqa: E402

MODES = ("textual", "batched", "trace")


@tg.op
def inc(x: int) -> int:
    return x + 1


def one(n: int, mode: str) -> tuple[float, float, int]:
    p = tg.Parameter(0, role="start", name="p")
    v = p
    for _ in range(n):
        v = inc(v)
    if mode == "trace":
        prop = TracePropagator()
    else:
        prop = TextualPropagator(engine=MockLLM(["ok"]), batch_feedback=(mode == "batched"))
    tracemalloc.start()
    t0 = time.perf_counter()
    v.backward("The result is too small.", propagator=prop)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak / 1e6, sum(len(g.text) for g in p.grads)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    out = {}
    for mode in MODES:
        rows = [one(args.nodes, mode) for _ in range(args.runs)]
        ts = [r[0] for r in rows]
        out[mode] = {"nodes": args.nodes, "runs": args.runs, "backward_s": statistics.median(ts),
                     "runs_s": ts, "peak_mb": max(r[1] for r in rows),
                     "feedback_chars": rows[0][2]}
        if not args.json:
            print(f"{mode:8} {args.nodes} nodes: {statistics.median(ts):.2f} s "
                  f"[{min(ts):.2f}-{max(ts):.2f}], peak {max(r[1] for r in rows):.0f} MB "
                  f"(traced allocations), feedback at the parameter {rows[0][2]} chars")
    if args.json:
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
