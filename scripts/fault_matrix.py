#!/usr/bin/env python
"""Run ``tracegrad optimize`` through every server fault and print what happened.

Each scenario makes a FakeOpenAIServer on 127.0.0.1 misbehave (429 storms with and without
Retry-After, 500/502/503, requests that hang past the client timeout, dropped connections,
truncated JSON bodies, empty or whitespace content, finish_reason=length, 1 MB replies,
replies missing every tag, JSON with the wrong keys, a model that echoes the prompt, an
outage that outlasts every retry, a dataset written as one JSON list on a single line,
1 MB replies under a 100 kB cache cap, and a server that quotes the Authorization header in
every reply) while a real optimization runs, through the Python API
(``tracegrad.train.optimize`` with OpenAIEngines) and through the CLI. After each run the
script checks what a user would: the run completed, or stopped with a one-line message
that says how to resume (and the resume then completes); no traceback; the prompt file is
byte-identical unless an improvement replaced it (then NAME.bak holds the original); the
run directory's history has steps 1..n exactly once; the cache passes integrity_check (and
holds no reply over the cap the run was given); the API key is in no file and was not printed.

    python scripts/fault_matrix.py            # every scenario x optimizer x (api, cli)
    python scripts/fault_matrix.py --quick    # the subset tests/reliability runs in CI
    python scripts/fault_matrix.py --only hang-past-timeout,outage-then-resume

Exit status 0 when no file was damaged, no run ended uncleanly and no traceback leaked.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.reliability.reliability_harness import (  # noqa: E402
    MatrixRow,
    format_table,
    full_plan,
    quick_plan,
    run_matrix,
    summarize,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the CI subset")
    ap.add_argument("--only", help="comma-separated scenario names")
    ap.add_argument("--mode", choices=("api", "cli", "both"), default="both")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=1.0, help="client timeout, seconds")
    ap.add_argument("--json", action="store_true", help="print the rows and summary as JSON")
    args = ap.parse_args(argv)

    plan = quick_plan() if args.quick else full_plan()
    if args.only:
        names = set(args.only.split(","))
        plan = [p for p in plan if p[0].name in names]
    if args.mode != "both":
        plan = [p for p in plan if p[2] == args.mode]

    def progress(row: MatrixRow) -> None:
        if not args.json:
            print(f"  {row.scenario} [{row.mode}, {row.optimizer}]: {row.outcome}"
                  f"{' DAMAGE' if row.damage else ''} ({row.seconds:.1f}s)", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="tg-fault-matrix-") as tmp:
        rows = run_matrix(Path(tmp), plan, steps=args.steps, timeout=args.timeout,
                          on_row=progress)
    summary = summarize(rows)
    if args.json:
        print(json.dumps({"summary": summary, "rows": [asdict(r) for r in rows]}, indent=2))
    else:
        print(format_table(rows))
    bad = summary["files_damaged"] or summary["unclean"] or summary["tracebacks"] \
        or summary["stopped_cleanly"] + summary["completed"] != summary["runs"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
