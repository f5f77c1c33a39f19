"""SIMULATED optimization-quality benchmark: every optimizer, every world, several seeds.

    python benchmarks/quality/run.py            # full: 5 seeds x 3 worlds x 4 optimizers
    python benchmarks/quality/run.py --quick    # smoke: 2 seeds, fewer steps (< 1 minute)

Measures whether evidence reaches the optimizer and whether search and selection resist
noise -- on stand-in models (``models.py``), not how well a real model rewrites. Test
accuracy, metric calls (rollouts) and estimated dollars (the pricing table's gpt-4o-mini
for the task model, gpt-4o for the reflection model) per run; medians and interquartile
ranges per world and optimizer; writes ``results.json`` beside this file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))

import tracegrad as tg  # noqa: E402
from quality.models import Noise, ReflectionModel, TaskModel  # noqa: E402
from quality.worlds import ANSWER_START, EXTRACT_START, WORLDS, PipelineWorld, World  # noqa: E402
from tracegrad.llm.meter import Meter  # noqa: E402
from tracegrad.promptfile import PromptFile  # noqa: E402
from tracegrad.testing import MockLLM  # noqa: E402
from tracegrad.train import evaluate, optimize  # noqa: E402
from tracegrad.train.metrics import get_metric  # noqa: E402

OPTIMIZERS = ["tgd", "tgd-batched", "trace", "opro", "reflect"]


def prompt_file(world: World) -> str:
    return (f"---\nmodel: mock:task\ninput: [{world.field}]\noutput: answer\n"
            f"metric: {world.metric}\ndescription: {world.description}\n---\n{world.start_prompt}")


class Pipeline(tg.Module):
    """extract (LLM) -> answer (LLM), each with a trainable system prompt."""

    def __init__(self, llm: tg.Engine) -> None:
        self.extract_prompt = tg.Parameter(EXTRACT_START, role="system prompt of the "
                                           "extraction step (writes the list of objects)")
        self.answer_prompt = tg.Parameter(ANSWER_START, role="system prompt of the answer "
                                          "step (answers from the object list)")
        self.extract = tg.LLMCall(llm, system=self.extract_prompt, name="extract",
                                  role="object list written by the extraction step")
        self.answer = tg.LLMCall(llm, system=self.answer_prompt, name="answer",
                                 role="answer of the answer step")

    def forward(self, question: str) -> tg.Variable:
        listing = self.extract(tg.Variable(question, role="question"))
        message = tg.format("Objects:\n{{ listing }}\n\nQuestion: {{ question }}",
                            role="input of the answer step", listing=listing, question=question)
        return self.answer(message)


def run_one(world_name: str, optimizer: str, seed: int, *, steps: int, batch: int,
            sizes: tuple[int, int, int], noise: Noise, concurrency: int = 1) -> dict[str, Any]:
    world = WORLDS[world_name](seed=seed)
    train, val, test = world.splits(seed, *sizes)
    task = Meter(MockLLM(TaskModel(world, seed, noise), model="gpt-4o-mini"))
    reflect = task.wrap(MockLLM(ReflectionModel(world, seed, noise), model="gpt-4o"))
    if isinstance(world, PipelineWorld):
        program, metric, start_value = Pipeline(task), get_metric(world.metric), ""
    else:
        pf = PromptFile.parse(prompt_file(world), f"{world_name}.prompt")
        program, metric, start_value = pf.to_module(task), pf.metric_fn(judge_engine=reflect), pf.body
    start = time.perf_counter()
    result = optimize(program, train, val, metric=metric, optimizer=optimizer, steps=steps,
                      batch_size=batch, engine=task, optimizer_engine=reflect, run_dir=False,
                      seed=seed, concurrency=concurrency, progress=False)
    rollouts = task.inner.calls if hasattr(task.inner, "calls") else None
    usd = task.usd
    best = dict(result.best_state or {})
    if best:
        program.load_state_dict(best, strict=False)
    test_score = evaluate(program, test, metric, concurrency=8).score
    rejected = Counter(str(h.get("result")) for h in result.history
                       if isinstance(h, dict) and h.get("result") not in ("accepted", None))
    return {"world": world_name, "optimizer": optimizer, "seed": seed,
            "baseline_val": result.baseline_score, "best_val": result.best_score,
            "test": test_score, "val_test_gap": (result.best_score or 0) - test_score,
            "rollouts": rollouts, "usd": round(usd, 6), "steps": result.steps_done,
            "rejected": dict(rejected), "seconds": round(time.perf_counter() - start, 2),
            "rules_stated": [r.name for r in world.rules
                             if r.stated_in(" ".join(map(str, best.values())) or start_value)]}


def _iqr(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return (xs[0], xs[0]) if xs else (0.0, 0.0)
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for world in sorted({r["world"] for r in runs}):
        for opt in OPTIMIZERS:
            mine = [r for r in runs if r["world"] == world and r["optimizer"] == opt]
            if not mine:
                continue
            tests = [r["test"] for r in mine]
            lo, hi = _iqr(tests)
            rej: Counter[str] = Counter()
            for r in mine:
                rej.update(r["rejected"])
            rows.append({"world": world, "optimizer": opt, "seeds": len(mine),
                         "test_median": statistics.median(tests), "test_iqr": [lo, hi],
                         "baseline_val_median": statistics.median(r["baseline_val"] for r in mine),
                         "rollouts_median": statistics.median(r["rollouts"] or 0 for r in mine),
                         "usd_median": statistics.median(r["usd"] for r in mine),
                         "gap_median": statistics.median(r["val_test_gap"] for r in mine),
                         "rejected": dict(rej)})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| world | optimizer | seeds | baseline val | test median [IQR] | rollouts | est. USD "
           "| val-test gap | rejected steps |", "|---|---|--:|--:|--:|--:|--:|--:|---|"]
    for r in rows:
        rej = ", ".join(f"{k} {v}" for k, v in sorted(r["rejected"].items())) or "-"
        out.append(f"| {r['world']} | {r['optimizer']} | {r['seeds']} | "
                   f"{r['baseline_val_median']:.2f} | {r['test_median']:.2f} "
                   f"[{r['test_iqr'][0]:.2f}, {r['test_iqr'][1]:.2f}] | "
                   f"{r['rollouts_median']:.0f} | {r['usd_median']:.4f} | "
                   f"{r['gap_median']:+.2f} | {rej} |")
    return "\n".join(out)


_COLOURS = {"tgd": "#1f77b4", "tgd-batched": "#17becf", "trace": "#d62728", "opro": "#7f7f7f"}


def plot_svg(rows: list[dict[str, Any]]) -> str:
    """Test accuracy (median, IQR bar) against rollouts, one panel per world. SIMULATED."""
    worlds = sorted({r["world"] for r in rows})
    w, h, pad = 260, 200, 40
    top = max((r["rollouts_median"] for r in rows), default=1) * 1.1 or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w * len(worlds)}" '
             f'height="{h + 50}" font-family="sans-serif" font-size="10">',
             f'<text x="5" y="{h + 45}">SIMULATED: test accuracy (median, IQR) vs rollouts; '
             f'stand-in models, not a real LLM</text>']
    for i, world in enumerate(worlds):
        x0 = i * w
        parts.append(f'<text x="{x0 + pad}" y="12" font-weight="bold">{world}</text>')
        parts.append(f'<rect x="{x0 + pad}" y="20" width="{w - pad - 10}" height="{h - 40}" '
                     'fill="none" stroke="#999"/>')
        for tick in (0, 0.5, 1):
            y = 20 + (1 - tick) * (h - 40)
            parts.append(f'<text x="{x0 + 15}" y="{y + 3:.0f}">{tick:g}</text>')
        parts.append(f'<text x="{x0 + pad}" y="{h - 5}">rollouts (0-{top:.0f})</text>')
        for j, r in enumerate(r for r in rows if r["world"] == world):
            x = x0 + pad + (r["rollouts_median"] / top) * (w - pad - 10)
            y = 20 + (1 - r["test_median"]) * (h - 40)
            lo, hi = (20 + (1 - v) * (h - 40) for v in r["test_iqr"])
            c = _COLOURS.get(r["optimizer"], "#000")
            parts.append(f'<line x1="{x:.1f}" y1="{lo:.1f}" x2="{x:.1f}" y2="{hi:.1f}" '
                         f'stroke="{c}"/><circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{c}"/>')
            parts.append(f'<text x="{x0 + w - 70}" y="{32 + 12 * j}" fill="{c}">'
                         f'{r["optimizer"]}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds, 3 steps: a smoke test")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--worlds", default=",".join(WORLDS))
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    args = ap.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 5)
    steps = args.steps or (3 if args.quick else 8)
    sizes = (20, 20, 30) if args.quick else (40, 40, 40)
    noise = Noise()
    runs = []
    for world in args.worlds.split(","):
        for opt in args.optimizers.split(","):
            for seed in range(seeds):
                r = run_one(world, opt, seed, steps=steps, batch=4, sizes=sizes, noise=noise)
                print(f"SIMULATED {world:<19} {opt:<12} seed {seed}: test {r['test']:.2f} "
                      f"(baseline val {r['baseline_val']:.2f}), {r['rollouts']} rollouts, "
                      f"${r['usd']:.4f}, {r['seconds']} s", file=sys.stderr)
                runs.append(r)
    rows = summarise(runs)
    print("SIMULATED -- stand-in models, not a real LLM\n")
    print(table(rows))
    if not args.quick:
        (HERE / "quality.svg").write_text(plot_svg(rows))
    args.out.write_text(json.dumps({"simulated": True, "quick": args.quick, "seeds": seeds,
                                    "steps": steps, "sizes": sizes, "noise": vars(noise),
                                    "summary": rows, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
