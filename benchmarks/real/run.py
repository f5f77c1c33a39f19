"""Reproduce published prompt-optimization results with a real API.

    python benchmarks/real/run.py --task object_counting --frameworks tracegrad \\
        --model openai:gpt-4o-mini --optimizer-model openai:gpt-4o --budget-usd 5

Runs the task on the published split (see ``data.py``) through tracegrad's own CLI (so the
real OpenAI client, cache, budget and gating are what is measured): the expected cost
first (asking before spending more than ``--confirm-above`` dollars, ``--yes`` to skip),
the test score of the starting prompt, the optimization, the test score of the result.
One JSON line per framework is appended to ``--out`` with model names, date, versions,
seed and the published figure beside it, so results can be shared.

Other frameworks (``dspy-gepa``, ``dspy-mipro``, ``textgrad``) are recorded as skipped with
the reason: their runners are not written yet (see the issue's closing note).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from real.data import TASKS, DataError, describe, splits  # noqa: E402

CLI = [sys.executable, "-c", "import sys; from tracegrad.cli import app; sys.exit(app())"]


def _write_task(work: Path, task: str, rows: tuple[list[dict[str, str]], ...], model: str,
                optimizer_model: str) -> Path:
    t = TASKS[task]
    work.mkdir(parents=True, exist_ok=True)
    for name, part in zip(("train", "val", "test"), rows, strict=True):
        (work / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    prompt = work / f"{task}.prompt"
    prompt.write_text(
        f"---\nmodel: {model}\noptimizer_model: {optimizer_model}\n"
        f"input:\n  question: the task's question\noutput: answer\nmetric: {t.metric}\n"
        f"description: {json.dumps(t.description)}\n---\n{t.template}")
    return prompt


def _cli(args: list[str], common: list[str], timeout: float) -> dict[str, Any]:
    r = subprocess.run([*CLI, *args, *common, "--json"], capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode not in (0,):
        raise RuntimeError(f"tracegrad {args[0]} exited {r.returncode}: "
                           f"{r.stderr.strip().splitlines()[-1:] or ''}")
    return json.loads(r.stdout)


def _confirm(upper: float, above: float, yes: bool) -> None:
    if upper <= above or yes:
        return
    if not sys.stdin.isatty():
        raise SystemExit(f"error: this run may cost up to ${upper:.2f} (over --confirm-above "
                         f"{above:g}); pass --yes to run it without asking")
    if input(f"This run may cost up to ${upper:.2f}. Continue? [y/N] ").strip().lower() != "y":
        raise SystemExit("cancelled")


def run_tracegrad(args: argparse.Namespace, rows: tuple[list[dict[str, str]], ...]) -> dict:
    work = args.workdir / f"{args.task}-tracegrad-{int(time.time())}"
    prompt = _write_task(work, args.task, rows, args.model, args.optimizer_model)
    common = ["--base-url", args.base_url] if args.base_url else []
    train, val, test = (str(work / f"{n}.jsonl") for n in ("train", "val", "test"))
    plan = ["--train", train, "--val", val, "--steps", str(args.steps),
            "--batch-size", str(args.batch_size), "--optimizer", args.optimizer]
    est = _cli(["estimate", str(prompt), *plan], [], 120)
    upper = float(est.get("upper_usd") or 0) + float(
        _cli(["estimate", str(prompt), "--train", test, "--steps", "1"], [], 120)["total"]
        .get("usd", 0)) * 2
    print(f"expected cost: ${est['total']['usd']:.4f} for the optimization (up to "
          f"${upper:.4f} with both test evaluations)", file=sys.stderr)
    _confirm(upper, args.confirm_above, args.yes)
    t0 = time.perf_counter()
    before = _cli(["eval", str(prompt), "--data", test], common, args.timeout)
    opt = _cli(["optimize", str(prompt), *plan, "--seed", str(args.seed), "--out",
                str(work / "optimized.prompt"), "--run-dir", str(work / "run"),
                *(["--budget-usd", str(args.budget_usd)] if args.budget_usd else [])],
               common, args.timeout)
    after = _cli(["eval", str(work / "optimized.prompt"), "--data", test], common, args.timeout)
    usages = [before.get("usage") or {}, opt.get("usage") or {}, after.get("usage") or {}]
    return {"test_before": before["score"], "test_after": after["score"],
            "val_baseline": opt.get("baseline_score"), "val_best": opt.get("best_score"),
            "steps_done": opt.get("steps_done"), "stopped_reason": opt.get("stopped_reason"),
            "usage": usages, "wall_s": round(time.perf_counter() - t0, 2),
            "work_dir": str(work)}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("tracegrad", "openai", "dspy", "textgrad"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=sorted(TASKS), default="object_counting")
    ap.add_argument("--frameworks", default="tracegrad")
    ap.add_argument("--model", default="openai:gpt-4o-mini")
    ap.add_argument("--optimizer-model", default="openai:gpt-4o")
    ap.add_argument("--optimizer", default="tgd", help="tracegrad's optimizer name")
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--budget-usd", type=float, default=None)
    ap.add_argument("--steps", type=int, default=12, help="TextGrad: 3 epochs of 50 at batch 3 "
                    "is about 50 steps; 12 is a cheaper default")
    ap.add_argument("--batch-size", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="cap each split (smoke runs)")
    ap.add_argument("--data", type=Path, action="append", help="local data file(s) in the "
                    "published format instead of downloading")
    ap.add_argument("--confirm-above", type=float, default=1.0)
    ap.add_argument("--yes", action="store_true")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--workdir", type=Path, default=Path("bench-real-runs"))
    ap.add_argument("--out", type=Path, default=HERE / "results.jsonl")
    args = ap.parse_args(argv)
    try:
        rows = splits(args.task, args.data, args.limit)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.task}: {len(rows[0])} train / {len(rows[1])} val / {len(rows[2])} test; "
          f"published: {TASKS[args.task].published}", file=sys.stderr)
    for fw in args.frameworks.split(","):
        record: dict[str, Any] = {
            "task": args.task, "framework": fw, "model": args.model,
            "optimizer_model": args.optimizer_model, "base_url_set": bool(args.base_url),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "seed": args.seed,
            "steps": args.steps, "batch_size": args.batch_size,
            "split": [len(r) for r in rows], "versions": _versions(),
            "data": "local" if args.data else describe(), "published": TASKS[args.task].published}
        if fw == "tracegrad":
            record.update(run_tracegrad(args, rows))
        else:
            record["skipped"] = f"no runner for {fw} yet"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps({k: record.get(k) for k in ("framework", "test_before", "test_after",
                                                       "wall_s", "skipped")}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
