"""Reproduce published prompt-optimization results with a real API.

    python benchmarks/real/run.py --task object_counting --frameworks tracegrad \\
        --model openai:gpt-4o-mini --optimizer-model openai:gpt-4o --budget-usd 5

Runs the task on the published split (see ``data.py``) through tracegrad's own CLI (so the
real OpenAI client, cache, budget and gating are what is measured): the expected cost
first (asking before spending more than ``--confirm-above`` dollars, ``--yes`` to skip),
the test score of the starting prompt, the optimization, the test score of the result.
One JSON line per framework is appended to ``--out`` with model names, date, versions,
seed and the published figure beside it, so results can be shared.

The peers (``dspy-gepa``, ``dspy-mipro``, ``textgrad``) run through ``peers.py``: their
runners (``peer_dspy.py``, ``peer_textgrad.py``) execute in the peers' own venv
(``--peers-python``; benchmarks/README.md says how to build it) on the same split, with the same
task and optimizer models and the same budget in metric calls (rollouts): ``--metric-calls``,
else what the tracegrad run of this invocation used, else what tracegrad's estimate plans
for ``--steps``. Every line carries ``test_before``/``test_after``, ``metric_calls``,
``llm_calls``, ``tokens``, ``usd`` (tracegrad's pricing table) and ``wall_s``; a peer whose
venv is missing is recorded as skipped with the reason. ``--simulated`` marks the lines of
a run against a fake server (``smoke.py``): such numbers are not results.
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

from real import peers  # noqa: E402
from real.data import TASKS, DataError, describe, splits  # noqa: E402

CLI = [sys.executable, "-c", "import sys; from tracegrad.cli import app; sys.exit(app())"]
FRAMEWORKS = ("tracegrad", *peers.RUNNERS)
SIMULATED_NOTE = ("SIMULATED: run against a fake server with scripted replies; these numbers "
                  "show that the runner works, they are not results")


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


def plan(args: argparse.Namespace, rows: tuple[list[dict[str, str]], ...]) -> dict[str, Any]:
    """tracegrad's estimate of the optimization (no call is made): its cost, its upper bound
    with both test evaluations, and the task-model calls (rollouts) it plans."""
    work = args.workdir / f"{args.task}-plan-{int(time.time() * 1000)}"
    prompt = _write_task(work, args.task, rows, args.model, args.optimizer_model)
    train, val, test = (str(work / f"{n}.jsonl") for n in ("train", "val", "test"))
    est = _cli(["estimate", str(prompt), "--train", train, "--val", val, "--steps",
                str(args.steps), "--batch-size", str(args.batch_size), "--optimizer",
                args.optimizer], [], 120)
    test_usd = float(_cli(["estimate", str(prompt), "--train", test, "--steps", "1"], [], 120)
                     ["total"].get("usd", 0))
    # the rollouts a run of --steps may make (every step validating): a budget, not a guess
    planned = (est.get("range") or {}).get("high", {}).get("rows") or est.get("rows", [])
    rollouts = sum(int(r["calls"]) for r in planned if r.get("model") == args.model)
    return {"usd": float(est["total"]["usd"]),
            "upper_usd": float(est.get("upper_usd") or 0) + 2 * test_usd,
            "metric_calls": rollouts}


def _tracegrad_metric_calls(run_dir: Path) -> int | None:
    """The rollouts of a tracegrad run: the task-model (forward) calls in its call log,
    cached or not, each of which the metric scored."""
    log = run_dir / "calls.jsonl"
    if not log.exists():
        return None
    n = 0
    for line in log.read_text(encoding="utf-8").splitlines():
        if line.strip() and json.loads(line).get("purpose") == "forward":
            n += 1
    return n


def run_tracegrad(args: argparse.Namespace, rows: tuple[list[dict[str, str]], ...]) -> dict:
    work = args.workdir / f"{args.task}-tracegrad-{int(time.time() * 1000)}"
    prompt = _write_task(work, args.task, rows, args.model, args.optimizer_model)
    common = ["--base-url", args.base_url] if args.base_url else []
    train, val, test = (str(work / f"{n}.jsonl") for n in ("train", "val", "test"))
    plan_args = ["--train", train, "--val", val, "--steps", str(args.steps),
                 "--batch-size", str(args.batch_size), "--optimizer", args.optimizer]
    t0 = time.perf_counter()
    before = _cli(["eval", str(prompt), "--data", test], common, args.timeout)
    opt = _cli(["optimize", str(prompt), *plan_args, "--seed", str(args.seed), "--out",
                str(work / "optimized.prompt"), "--run-dir", str(work / "run"),
                *(["--budget-usd", str(args.budget_usd)] if args.budget_usd else [])],
               common, args.timeout)
    after = _cli(["eval", str(work / "optimized.prompt"), "--data", test], common, args.timeout)
    usages = [before.get("usage") or {}, opt.get("usage") or {}, after.get("usage") or {}]
    return {"test_before": before["score"], "test_after": after["score"],
            "val_baseline": opt.get("baseline_score"), "val_best": opt.get("best_score"),
            "steps_done": opt.get("steps_done"), "stopped_reason": opt.get("stopped_reason"),
            "metric_calls": _tracegrad_metric_calls(work / "run"),
            "llm_calls": sum(int(u.get("calls", 0)) for u in usages),
            "tokens": sum(int(u.get("total_tokens", 0)) for u in usages),
            "usd": round(sum(float(u.get("usd", 0)) for u in usages), 6),
            "usage": usages, "wall_s": round(time.perf_counter() - t0, 2),
            "work_dir": str(work)}


def _metric_budget(args: argparse.Namespace, done: list[dict[str, Any]],
                   planned: int) -> tuple[int, str]:
    if args.metric_calls:
        return args.metric_calls, "--metric-calls"
    for r in done:
        if r["framework"] == "tracegrad" and r.get("metric_calls") and not r.get("error"):
            return int(r["metric_calls"]), "tracegrad's run in this invocation"
    return planned, "tracegrad's estimate for --steps"


def _peer(fw: str, args: argparse.Namespace, rows: tuple[list[dict[str, str]], ...],
          done: list[dict[str, Any]], planned: int) -> dict[str, Any]:
    budget, source = _metric_budget(args, done, planned)
    need = peers.RUNNERS[fw][2]
    python = peers.peers_python(args.peers_python)
    if python is None:
        return {"skipped": f"no peers venv with {need}: build one (see benchmarks/README.md, "
                           "'Running it') or pass --peers-python", "metric_budget": budget}
    options = {"dspy_module": args.dspy_module, "gepa_auto": args.gepa_auto}
    out = peers.run_peer(fw, args, rows, task=TASKS[args.task], metric_budget=budget,
                         python=python, options={k: v for k, v in options.items() if v})
    out["metric_budget_source"] = source
    return out


def _table(records: list[dict[str, Any]]) -> str:
    head = "| framework | test before -> after | metric calls (budget) | LLM calls | tokens | $ | wall s |"
    lines = [head, "|---|---|---|---|---|---|---|"]

    def f(x: Any, fmt: str = "{:.3f}") -> str:
        return "-" if x is None else fmt.format(x)

    for r in records:
        if r.get("skipped") or r.get("error"):
            lines.append(f"| {r['framework']} | {'skipped' if r.get('skipped') else 'error'}: "
                         f"{(r.get('skipped') or r.get('error'))[:80]} | | | | | |")
            continue
        budget = f" ({r['metric_budget']})" if r.get("metric_budget") else ""
        lines.append(f"| {r['framework']} | {f(r.get('test_before'))} -> {f(r.get('test_after'))}"
                     f" | {f(r.get('metric_calls'), '{}')}{budget} | {f(r.get('llm_calls'), '{}')}"
                     f" | {f(r.get('tokens'), '{:,}')} | {f(r.get('usd'), '{:.4f}')}"
                     f" | {f(r.get('wall_s'), '{:.1f}')} |")
    return "\n".join(lines)


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
    ap.add_argument("--frameworks", default="tracegrad",
                    help=f"comma-separated, from: {', '.join(FRAMEWORKS)}")
    ap.add_argument("--model", default="openai:gpt-4o-mini")
    ap.add_argument("--optimizer-model", default="openai:gpt-4o")
    ap.add_argument("--optimizer", default="tgd", help="tracegrad's optimizer name")
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--budget-usd", type=float, default=None,
                    help="dollar cap of each framework's optimization")
    ap.add_argument("--steps", type=int, default=12, help="optimization steps; 12 is "
                    "TextGrad's published run (3 epochs of 4 batches)")
    ap.add_argument("--batch-size", type=int, default=3)
    ap.add_argument("--metric-calls", type=int, default=None, help="the peers' budget in "
                    "rollouts (default: what tracegrad used in this run, else planned)")
    ap.add_argument("--peers-python", default=None, help="Python of the peers' venv "
                    "(default: $TRACEGRAD_PEERS_PYTHON, else benchmarks/.real-peers-venv)")
    ap.add_argument("--dspy-module", choices=("predict", "cot"), default=None,
                    help="DSPy program: Predict (default, one prompt as in the others) or "
                    "ChainOfThought")
    ap.add_argument("--gepa-auto", choices=("light", "medium", "heavy"), default=None,
                    help="GEPA's own budget instead of the shared --metric-calls one")
    ap.add_argument("--num-threads", type=int, default=8, help="the peers' evaluation threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="cap each split (smoke runs)")
    ap.add_argument("--data", type=Path, action="append", help="local data file(s) in the "
                    "published format instead of downloading")
    ap.add_argument("--confirm-above", type=float, default=1.0)
    ap.add_argument("--yes", action="store_true")
    ap.add_argument("--simulated", action="store_true", help="label the lines SIMULATED "
                    "(a fake server, as smoke.py runs): not results")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--workdir", type=Path, default=Path("bench-real-runs"))
    ap.add_argument("--out", type=Path, default=HERE / "results.jsonl")
    args = ap.parse_args(argv)
    fws = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    unknown = [f for f in fws if f not in FRAMEWORKS]
    if unknown or not fws:
        print(f"error: unknown framework(s) {', '.join(unknown) or '(none given)'}; choose "
              f"from {', '.join(FRAMEWORKS)}", file=sys.stderr)
        return 2
    for name in ("steps", "batch_size", "metric_calls", "num_threads", "limit"):
        v = getattr(args, name)
        if v is not None and v < 1:
            print(f"error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    try:
        rows = splits(args.task, args.data, args.limit)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.task}: {len(rows[0])} train / {len(rows[1])} val / {len(rows[2])} test; "
          f"published: {TASKS[args.task].published}", file=sys.stderr)
    est = plan(args, rows)
    n_peers = sum(f != "tracegrad" for f in fws)
    per_peer = args.budget_usd if args.budget_usd else est["upper_usd"]
    upper = (est["upper_usd"] if "tracegrad" in fws else 0.0) + n_peers * per_peer
    print(f"expected cost: ${est['usd']:.4f} per framework for the optimization (tracegrad's "
          f"estimate, {est['metric_calls']} rollouts); up to ${upper:.4f} for "
          f"{', '.join(fws)} with the test evaluations", file=sys.stderr)
    _confirm(upper, args.confirm_above, args.yes)
    done: list[dict[str, Any]] = []
    failed = False
    for fw in fws:
        record: dict[str, Any] = {
            "task": args.task, "framework": fw, "model": args.model,
            "optimizer_model": args.optimizer_model, "base_url_set": bool(args.base_url),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "seed": args.seed,
            "steps": args.steps, "batch_size": args.batch_size,
            "split": [len(r) for r in rows], "versions": _versions(),
            "data": "local" if args.data else describe(), "published": TASKS[args.task].published}
        if args.simulated:
            record.update({"simulated": True, "note": SIMULATED_NOTE})
        try:
            if fw == "tracegrad":
                record.update(run_tracegrad(args, rows))
            else:
                record.update(_peer(fw, args, rows, done, est["metric_calls"]))
        except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as e:
            record["error"] = str(e)
        failed = failed or bool(record.get("error"))
        done.append(record)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps({k: record.get(k) for k in (
            "framework", "test_before", "test_after", "metric_calls", "llm_calls", "usd",
            "wall_s", "skipped", "error")}))
    print(("SIMULATED -- not results\n" if args.simulated else "") + _table(done),
          file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
