"""Run a peer framework's runner (DSPy GEPA, DSPy MIPROv2, TextGrad) from run.py.

Each runner is a script executed by the peers' own Python (a separate venv with the
``peers`` extra, see benchmarks/README.md), so tracegrad's environment never imports dspy or
textgrad. The exchange is two JSON files (``peer_common``): the configuration run.py writes
and the result the runner writes. This module prices the runner's token counts with
tracegrad's pricing table, so every framework's dollars come from one table (DSPy's own
litellm cost is kept beside it as ``usd_framework``).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from real import peer_common as pc

HERE = Path(__file__).resolve().parent
DEFAULT_PEERS_PYTHON = HERE.parent / ".real-peers-venv" / "bin" / "python"

# framework -> (runner script, its arguments, the package it needs)
RUNNERS: dict[str, tuple[Path, list[str], str]] = {
    "dspy-gepa": (HERE / "peer_dspy.py", ["--optimizer", "gepa"], "dspy"),
    "dspy-mipro": (HERE / "peer_dspy.py", ["--optimizer", "mipro"], "dspy"),
    "textgrad": (HERE / "peer_textgrad.py", [], "textgrad"),
}


def peers_python(explicit: str | None) -> Path | None:
    """The interpreter of the peers' venv: --peers-python, $TRACEGRAD_PEERS_PYTHON, or
    benchmarks/.real-peers-venv; None when the one chosen does not exist."""
    if explicit:
        return Path(explicit) if Path(explicit).exists() else None
    for cand in (os.environ.get("TRACEGRAD_PEERS_PYTHON"), str(DEFAULT_PEERS_PYTHON)):
        if cand and Path(cand).exists():
            return Path(cand)
    return None


def prices(*models: str) -> dict[str, dict[str, float]]:
    from tracegrad.llm.pricing import price_for

    out = {}
    for m in models:
        p = price_for(m)
        if p.known:
            out[pc.bare_model(m)] = {"input": p.input, "output": p.output}
    return out


def price_usage(usage: dict[str, dict[str, dict[str, int]]]) -> dict[str, float]:
    """{phase: usd} for a runner's {phase: {model: counts}}, at tracegrad's prices."""
    from tracegrad.llm.base import Usage
    from tracegrad.llm.pricing import cost

    out = {ph: sum(cost(m, Usage(int(u.get("prompt_tokens", 0)),
                                 int(u.get("completion_tokens", 0))))
                   for m, u in rows.items())
           for ph, rows in usage.items()}
    out["total"] = sum(out.values())
    return out


def run_peer(fw: str, args: Any, rows: tuple[list[dict[str, str]], ...], *, task: Any,
             metric_budget: int, python: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Run ``fw``'s runner on ``rows`` and return the fields for its results line."""
    script, extra, _ = RUNNERS[fw]
    work = (args.workdir / f"{args.task}-{fw}-{int(time.time() * 1000)}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    train, val, test = rows
    cfg = pc.write_config(
        work / "config.json", framework=fw, task=args.task, metric=task.metric,
        instruction=task.description, train=train, val=val, test=test, model=args.model,
        optimizer_model=args.optimizer_model, base_url=args.base_url,
        metric_budget=metric_budget, budget_usd=args.budget_usd,
        prices=prices(args.model, args.optimizer_model), seed=args.seed, steps=args.steps,
        batch_size=args.batch_size, num_threads=args.num_threads, workdir=str(work),
        options=options)
    out, log = work / "result.json", work / "runner.log"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1",
           "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        try:
            rc = subprocess.run([str(python), str(script), *extra, "--config", str(cfg),
                                 "--out", str(out)], stdout=f, stderr=subprocess.STDOUT,
                                env=env, cwd=work, timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = round(time.perf_counter() - t0, 2)
    if not out.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        return {"error": f"{fw} runner exited {rc} without a result ({tail[0][:300]}); "
                         f"see {log}", "wall_s": wall, "work_dir": str(work)}
    res = json.loads(out.read_text())
    usd = price_usage(res.get("usage") or {})
    fw_usd = res.get("framework_usd") or {}
    fields = {k: res.get(k) for k in (
        "test_before", "test_after", "val_before", "val_best", "metric_calls",
        "eval_metric_calls", "llm_calls", "tokens", "usage", "stopped_reason", "settings",
        "final_instruction", "steps_done", "steps_reverted", "gepa", "import_s",
        "optimize_s", "error")}
    fields.update({"metric_budget": metric_budget, "usd": round(usd["total"], 6),
                   "usd_by_phase": {k: round(v, 6) for k, v in usd.items()},
                   "usd_framework": round(sum(fw_usd.values()), 6) if fw_usd else None,
                   "runner_wall_s": res.get("wall_s"), "wall_s": wall,
                   "peer_versions": res.get("versions"), "work_dir": str(work)})
    if rc != 0 and not fields.get("error"):
        fields["error"] = f"{fw} runner exited {rc}; see {log}"
    return {k: v for k, v in fields.items() if v is not None or k in ("test_after",)}
