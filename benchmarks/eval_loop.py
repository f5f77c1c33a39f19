"""`tracegrad eval` on 200 rows at 200 ms per request: how close to the limit, how fast a
freed slot is reused, how long until the first request.

    python benchmarks/eval_loop.py [--rows 200] [--concurrency 32] [--runs 3]

Each run is a real child process (what a user's shell runs: the console script, typer,
the real ``openai`` client) against the benchmark server in this process, whose request
log gives every number:

- *limit*: ``ceil(rows / concurrency)`` waves x latency, what an eval loop that refills
  every freed slot at once needs; *x limit* is the eval's span (first request in to last
  reply out) over it;
- *slot wait*: for each reply, the time until the next request arrived (while rows were
  left), the delay before a freed slot is used again; median and 90th percentile;
- *first request*: from the child's start to the first request the server saw (imports,
  reading the prompt file and the data, building the client).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from server import BenchServer  # noqa: E402

PROMPT = """---
description: Add two numbers.
input:
  question: an addition question
output: answer
metric: numeric
---
Answer the question with the number only.

{{ question }}
"""


def _data(path: str, rows: int) -> None:
    with open(path, "w") as f:
        for i in range(rows):
            a, b = 11 + (i * 7) % 53, 5 + (i * 13) % 41
            f.write(json.dumps({"question": f"Q{i + 1}: What is {a} + {b}?",
                                "answer": str(a + b)}) + "\n")


def slot_waits(log: list[dict]) -> list[float]:
    """For each reply while rows were still waiting: seconds until the next arrival."""
    arrivals = sorted(e["arrival"] for e in log)
    waits = []
    for d in sorted(e["done"] for e in log):
        later = [a for a in arrivals if a >= d]
        if later:
            waits.append(later[0] - d)
    return waits


def one_run(server: BenchServer, work: str, rows: int, concurrency: int) -> dict:
    exe = shutil.which("tracegrad") or "tracegrad"
    cmd = [exe, "eval", os.path.join(work, "add.prompt"), "--data",
           os.path.join(work, "rows.jsonl"), "--model", "openai:bench-model", "--base-url",
           server.url, "--concurrency", str(concurrency), "--no-cache", "--json", "-q"]
    env = {**os.environ, "OPENAI_API_KEY": "bench-key", "TRACEGRAD_NO_CACHE": "1"}
    n0 = len(server.log)
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work)
    t1 = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"eval failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    log = server.log[n0:]
    if len(log) != rows:
        raise SystemExit(f"expected {rows} requests, the server saw {len(log)}")
    first, last = min(e["arrival"] for e in log), max(e["done"] for e in log)
    waits = sorted(slot_waits(log))
    limit = math.ceil(rows / concurrency) * server.latency
    return {"span_s": last - first, "limit_s": limit, "x_limit": (last - first) / limit,
            "first_request_s": first - t0, "process_s": t1 - t0,
            "slot_wait_median_ms": 1000 * statistics.median(waits),
            "slot_wait_p90_ms": 1000 * waits[int(0.9 * (len(waits) - 1))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency", type=float, default=0.2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work, BenchServer(args.latency) as server:
        with open(os.path.join(work, "add.prompt"), "w") as f:
            f.write(PROMPT)
        _data(os.path.join(work, "rows.jsonl"), args.rows)
        runs = [one_run(server, work, args.rows, args.concurrency) for _ in range(args.runs)]
    print(f"`tracegrad eval`, {args.rows} rows, --concurrency {args.concurrency}, "
          f"{int(args.latency * 1000)} ms per request, {args.runs} runs: median [min-max]\n")
    print("| measure | value |\n|---|--:|")
    for key, label in [("span_s", "eval span, s"), ("limit_s", "limit, s"),
                       ("x_limit", "x limit"), ("slot_wait_median_ms", "slot wait median, ms"),
                       ("slot_wait_p90_ms", "slot wait p90, ms"),
                       ("first_request_s", "first request after start, s"),
                       ("process_s", "whole command, s")]:
        xs = [r[key] for r in runs]
        print(f"| {label} | {statistics.median(xs):.3f} [{min(xs):.3f}-{max(xs):.3f}] |")


if __name__ == "__main__":
    main()
