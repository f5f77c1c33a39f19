"""A 10,000-row ``tracegrad eval --batch`` against FakeOpenAIServer: time and peak RSS.

    python benchmarks/batch_scale.py              # 10,000 rows, then a live eval to compare
    python benchmarks/batch_scale.py --rows 2000 --no-live

The eval runs as a real child process (what a user's shell runs), through the real
``openai`` client; the fake server runs in this process, so the child's peak RSS is the
client's alone (``getrusage(RUSAGE_CHILDREN)``). Every row's question is distinct, so
every row is one line of the batch. Reported: wall time, peak RSS of the eval, lines
answered by the server's batch, live chat calls (0 expected), score, and the meter's cost
of the batch run next to the live run's. SIMULATED: the server answers instantly; a real
provider takes up to its completion window (typically within 24 h).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracegrad.testing import FakeOpenAIServer  # noqa: E402

PROMPT = """---
model: openai:gpt-4o-mini
input:
  question: a request to repeat a number
output: answer
metric: exact_match
---
Repeat the number at the end, digits only.

{{ question }}
"""
CLI_BOOT = "import sys; from tracegrad.cli import app; sys.exit(app())"


def reply(body: dict) -> str:
    return body["messages"][-1]["content"].split()[-1]


def write_task(d: Path, rows: int) -> None:
    (d / "task.prompt").write_text(PROMPT)
    with open(d / "data.jsonl", "w") as f:
        for i in range(rows):
            f.write(json.dumps({"question": f"row {i}: please say {i}", "answer": str(i)}) + "\n")


def run_eval(d: Path, url: str, *extra: str) -> tuple[dict, float, float]:
    """(the eval's JSON, seconds, peak RSS in MB) of one child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TRACEGRAD_"))}
    env.update(OPENAI_API_KEY="sk-bench-not-a-real-key-000000", TRACEGRAD_NO_CACHE="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", CLI_BOOT, "eval", str(d / "task.prompt"),
                        "--data", str(d / "data.jsonl"), "--base-url", url, "--json",
                        "--show", "0", *extra], capture_output=True, text=True, env=env, cwd=d)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"eval failed ({p.returncode}): {p.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest child so far: run the batch eval first
    return json.loads(p.stdout), seconds, max(peak, before) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--no-live", action="store_true", help="skip the live eval to compare")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(reply, batch_delay=0.5) as srv:
        d = Path(tmp)
        write_task(d, args.rows)
        res, seconds, rss = run_eval(d, srv.url, "--batch", "--run-dir", str(d / "run"),
                                     "--batch-poll", "0.2")
        out = {"rows": args.rows, "batch_seconds": round(seconds, 2),
               "batch_peak_rss_mb": round(rss, 1), "score": res["score"],
               "batches": srv.batch.created, "lines_answered": srv.batch.lines_answered,
               "live_chat_calls": srv.request_count, "batch_usd": res["usage"]["usd"]}
        if not args.no_live:
            live, live_s, _ = run_eval(d, srv.url)
            out.update(live_seconds=round(live_s, 2), live_usd=live["usage"]["usd"],
                       live_score=live["score"])
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
