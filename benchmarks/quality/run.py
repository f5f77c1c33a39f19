"""SIMULATED optimization-quality benchmark: every optimizer, every world, several seeds.

    python benchmarks/quality/run.py            # full: 6 optimizers x 7 worlds x 5/10 seeds
    python benchmarks/quality/run.py --quick    # smoke: 2 seeds, small splits (< 1 minute)

Measures whether evidence reaches the optimizer and whether search and selection resist
noise -- on stand-in models (``models.py``), not how well a real model rewrites. Test
accuracy, metric calls (rollouts: one program run on one example, scored) and estimated
dollars (the pricing table's gpt-4o-mini for the task model, gpt-4o for the reflection
model) per run; medians and interquartile ranges per world and optimizer.

Two kinds of world (``worlds.py``). The four classic ones run 8 steps, as they always
have (their table stays reproducible). The harder ones run until a budget of 800 metric
calls is spent; for every run the best candidate after each step is kept, so the test
accuracy an optimizer reaches within 100, 200, 400 and 800 metric calls -- or within a
dollar amount -- is read off one run: optimizers are compared at equal cost.
Writes ``results.json`` (and, for a full run, ``quality.svg``) beside this file.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))

import tracegrad as tg  # noqa: E402
from quality.models import Noise, ReflectionModel, TaskModel, _insert  # noqa: E402
from quality.worlds import (  # noqa: E402
    ANSWER_START,
    CLASSIC,
    EXTRACT_START,
    HARD,
    ROUTE_START,
    SUMMARY_START,
    WORLDS,
    PipelineWorld,
    TriageWorld,
    World,
)
from tracegrad.llm.meter import Meter  # noqa: E402
from tracegrad.promptfile import PromptFile  # noqa: E402
from tracegrad.testing import MockLLM  # noqa: E402
from tracegrad.train import evaluate, optimize  # noqa: E402
from tracegrad.train.metrics import get_metric  # noqa: E402

OPTIMIZERS = ["tgd", "tgd-batched", "trace", "opro", "reflect", "reflect-lean"]


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


class Triage(tg.Module):
    """summary (LLM) -> route (LLM); the router sees only the note, never the ticket."""

    def __init__(self, llm: tg.Engine) -> None:
        self.summary_prompt = tg.Parameter(SUMMARY_START, role="system prompt of the summary "
                                           "step (writes a one-line note about the ticket)")
        self.route_prompt = tg.Parameter(ROUTE_START, role="system prompt of the routing step "
                                         "(chooses the team from the note alone)")
        self.summary = tg.LLMCall(llm, system=self.summary_prompt, name="summary",
                                  role="one-line note written by the summary step")
        self.route = tg.LLMCall(llm, system=self.route_prompt, name="route",
                                role="team chosen by the routing step")

    def forward(self, ticket: str) -> tg.Variable:
        return self.route(self.summary(tg.Variable(ticket, role="support ticket")))


# How each kind of world is run: splits (train, val, test), steps, metric-call cap, and the
# budgets the table reports. A classic world runs its 8 steps (no cap); a hard one runs
# until the cap. --quick shrinks both.
CONFIG = {
    "classic": {"sizes": (40, 40, 40), "steps": 8, "cap": None, "seeds": 5},
    "hard": {"sizes": (60, 50, 100), "steps": 200, "cap": 800, "seeds": 10},
}
QUICK = {
    "classic": {"sizes": (20, 20, 30), "steps": 3, "cap": None, "seeds": 2},
    "hard": {"sizes": (30, 30, 40), "steps": 200, "cap": 240, "seeds": 2},
}
BUDGETS = (100, 200, 400, 800)
QUICK_BUDGETS = (60, 120, 240)


NOISE_OVERRIDES: dict[str, Any] = {}  # --noise KEY=VALUE, on top of every world's noise


def world_noise(world_name: str, base: Noise | None = None) -> Noise:
    """The stand-ins' noise in ``world_name``: ``base`` (default rates) with the world's own
    overrides (the hard worlds' lower indirect rate and tighter length budget), then
    :data:`NOISE_OVERRIDES`."""
    noise = replace(base or Noise(), **WORLDS[world_name](seed=0, n=1).noise) if (
        world_name in HARD) else (base or Noise())
    return replace(noise, **NOISE_OVERRIDES)


def _noise_override(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    fields = vars(Noise())
    if key not in fields or not value:
        raise argparse.ArgumentTypeError(f"use KEY=VALUE with KEY one of {', '.join(fields)}")
    kind = type(fields[key])
    return key, (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)


def run_one(world_name: str, optimizer: str, seed: int, *, steps: int, batch: int,
            sizes: tuple[int, int, int], noise: Noise | None = None, cap: int | None = None,
            concurrency: int = 1) -> dict[str, Any]:
    """One optimization run and its test scores. ``noise=None``: the world's own noise.

    ``curve`` holds one point per finished step (and one for the start): metric calls and
    dollars spent so far, the best validation score so far, and the test accuracy of the
    best candidate so far -- what the run would have returned had it stopped there.
    """
    world = WORLDS[world_name](seed=seed)
    noise = noise or world_noise(world_name)
    train, val, test = world.splits(seed, *sizes)
    task_model = TaskModel(world, seed, noise, cap=cap)
    task = Meter(MockLLM(task_model, model="gpt-4o-mini"))
    reflect = task.wrap(MockLLM(ReflectionModel(world, seed, noise), model="gpt-4o"))
    if isinstance(world, TriageWorld):
        program, metric = Triage(task), get_metric(world.metric)
    elif isinstance(world, PipelineWorld):
        program, metric = Pipeline(task), get_metric(world.metric)
    else:
        pf = PromptFile.parse(prompt_file(world), f"{world_name}.prompt")
        program, metric = pf.to_module(task), pf.metric_fn(judge_engine=reflect)
    start_state = {k: v for k, v in program.state_dict().items() if isinstance(v, str)}
    points: list[dict[str, Any]] = [{"step": 0, "rollouts": 0, "usd": 0.0, "best_val": None,
                                     "state": start_state}]

    def on_step(rec: dict[str, Any]) -> None:
        state = points[-1]["state"]
        if rec.get("best") != points[-1].get("best"):
            # with Pareto search the best may be a candidate kept on the front, not this
            # step's accepted one: the trainer records its values
            state = dict(rec.get("best_values") or rec["values"]) if rec.get("best") != "c0" \
                else start_state
        points.append({"step": rec["step"], "rollouts": task_model.rollouts,
                       "usd": round(task.usd, 6), "best_val": rec.get("best_score"),
                       "best": rec.get("best"), "state": state})

    start = time.perf_counter()
    result = optimize(program, train, val, metric=metric, optimizer=optimizer, steps=steps,
                      batch_size=batch, engine=task, optimizer_engine=reflect, run_dir=False,
                      seed=seed, concurrency=concurrency, progress=False, on_step=on_step)
    seconds = time.perf_counter() - start
    rollouts = task.inner.calls if hasattr(task.inner, "calls") else None
    metric_calls, usd = task_model.rollouts, task.usd
    task_model.cap = None  # the test set is not part of the budget
    best = dict(result.best_state or {})
    tests: dict[str, float] = {}

    def test_score(state: dict[str, Any]) -> float:
        key = json.dumps(state, sort_keys=True)
        if key not in tests:
            if state:
                program.load_state_dict(state, strict=False)
            tests[key] = evaluate(program, test, metric, concurrency=8).score
        return tests[key]

    for pt in points:
        pt["test"] = test_score(pt.pop("state"))
        pt.pop("best", None)
    test_score_ = test_score(best)
    if points[-1]["test"] != test_score_:
        raise AssertionError("the last step's best is not the run's best")
    rejected = Counter(str(h.get("result")) for h in result.history
                       if isinstance(h, dict) and h.get("result") not in ("accepted", None))
    stated_in = " ".join(map(str, best.values())) or world.start_prompt
    return {"world": world_name, "optimizer": optimizer, "seed": seed,
            "baseline_val": result.baseline_score, "best_val": result.best_score,
            "test": test_score_, "val_test_gap": (result.best_score or 0) - test_score_,
            "rollouts": rollouts, "metric_calls": metric_calls, "usd": round(usd, 6),
            "steps": result.steps_done, "stopped": result.stopped_reason,
            "rejected": dict(rejected), "seconds": round(seconds, 2),
            "rules_stated": [r.name for r in world.rules if r.stated_in(stated_in)],
            "curve": points}


def oracle_state(world: World, state: dict[str, str], order: int = 0) -> dict[str, str]:
    """``state`` with every rule stated in its shortest wording, in the prompt where it acts:
    what a perfect optimizer could reach (the length budget is sized for exactly this).
    ``order`` shuffles the added lines (same length, another draw of the task model's slips)."""
    out = {}
    for name, value in state.items():
        stage = getattr(world, "stage_of_param", lambda n: None)(name)
        todo = [min(r.wordings, key=len) for r in world.rules if not r.stated_in(value)
                and (stage is None or world.stage_of_rule[r.name] == stage)]
        if order:
            random.Random(f"oracle:{order}").shuffle(todo)
        out[name] = _insert(value.split("\n"), todo)
    return out


def ceiling(world_name: str, seed: int, sizes: tuple[int, int, int], orders: int = 8,
            noise: Noise | None = None) -> float:
    """Expected test accuracy of :func:`oracle_state` in ``world_name`` with ``seed``: the
    mean over ``orders`` orders of its lines, so one unlucky draw of slips does not set it."""
    world = WORLDS[world_name](seed=seed)
    _, _, test = world.splits(seed, *sizes)
    task_model = TaskModel(world, seed, noise or world_noise(world_name))
    task = Meter(MockLLM(task_model, model="gpt-4o-mini"))
    if isinstance(world, TriageWorld):
        program, metric = Triage(task), get_metric(world.metric)
    else:
        pf = PromptFile.parse(prompt_file(world), f"{world_name}.prompt")
        program, metric = pf.to_module(task), get_metric(world.metric)
    state = {k: v for k, v in program.state_dict().items() if isinstance(v, str)}
    scores = []
    for order in range(orders):
        program.load_state_dict(oracle_state(world, state, order), strict=False)
        scores.append(evaluate(program, test, metric, concurrency=8).score)
    return statistics.mean(scores)


def at_budget(run: dict[str, Any], key: str, budget: float) -> float:
    """Test accuracy of the best candidate the run had when ``key`` (rollouts or usd) was
    at most ``budget``: the last point within it (a run that ended earlier keeps its end)."""
    within = [pt for pt in run["curve"] if pt[key] <= budget + 1e-12]
    return within[-1]["test"] if within else run["curve"][0]["test"]


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
                         "best_val_median": statistics.median(r["best_val"] or 0 for r in mine),
                         "metric_calls_median": statistics.median(r["metric_calls"]
                                                                  for r in mine),
                         "steps_median": statistics.median(r["steps"] for r in mine),
                         "baseline_val_median": statistics.median(r["baseline_val"] for r in mine),
                         "rollouts_median": statistics.median(r["rollouts"] or 0 for r in mine),
                         "usd_median": statistics.median(r["usd"] for r in mine),
                         "gap_median": statistics.median(r["val_test_gap"] for r in mine),
                         "rejected": dict(rej)})
    return rows


def budget_rows(runs: list[dict[str, Any]], budgets: tuple[int, ...],
                ceilings: dict[str, list[float]] | None = None) -> list[dict[str, Any]]:
    """Per world and optimizer: test accuracy (median, IQR) within each metric-call budget,
    and within equal dollars: a quarter, half and all of the world's smallest median
    spend (``usd_points``), so every optimizer had spent at least that much."""
    rows = []
    for world in sorted({r["world"] for r in runs}):
        mine_w = [r for r in runs if r["world"] == world]
        spend = min(statistics.median(r["usd"] for r in mine_w if r["optimizer"] == o)
                    for o in {r["optimizer"] for r in mine_w})
        usd_points = [round(spend * f, 6) for f in (0.25, 0.5, 1.0)]
        if ceilings and world in ceilings:
            rows.append({"world": world, "optimizer": "ceiling", "seeds": len(ceilings[world]),
                         "test_median": statistics.median(ceilings[world]),
                         "test_iqr": list(_iqr(ceilings[world]))})
        for opt in OPTIMIZERS:
            mine = [r for r in mine_w if r["optimizer"] == opt]
            if not mine:
                continue

            def med(xs: list[float]) -> dict[str, Any]:
                return {"median": statistics.median(xs), "iqr": list(_iqr(xs))}

            rows.append({
                "world": world, "optimizer": opt, "seeds": len(mine),
                "baseline_test": statistics.median(r["curve"][0]["test"] for r in mine),
                "test_at_calls": {str(b): med([at_budget(r, "rollouts", b) for r in mine])
                                  for b in budgets},
                "usd_points": usd_points,
                "test_at_usd": [med([at_budget(r, "usd", d) for r in mine]) for d in usd_points],
                "best_val_median": statistics.median(r["best_val"] or 0 for r in mine),
                "gap_median": statistics.median(r["val_test_gap"] for r in mine),
                "metric_calls_median": statistics.median(r["metric_calls"] for r in mine),
                "usd_median": statistics.median(r["usd"] for r in mine),
                "steps_median": statistics.median(r["steps"] for r in mine),
            })
    return rows


def _cell(m: dict[str, Any]) -> str:
    return f"{m['median']:.2f} [{m['iqr'][0]:.2f}, {m['iqr'][1]:.2f}]"


def budget_table(rows: list[dict[str, Any]], budgets: tuple[int, ...]) -> str:
    head = " | ".join(f"test @ {b} calls" for b in budgets)
    out = [f"| world | optimizer | seeds | start test | {head} | test @ equal $ (1/4, 1/2, 1 "
           "of the world's smallest spend) | calls used | est. USD | steps | val-test gap |",
           "|---|---|--:|--:|" + "--:|" * len(budgets) + "---|--:|--:|--:|--:|"]
    for r in rows:
        if r["optimizer"] == "ceiling":
            ceil = _cell({"median": r["test_median"], "iqr": r["test_iqr"]})
            out.append(f"| {r['world']} | *ceiling: every rule stated tersely* | {r['seeds']} | "
                       f"| {' | '.join([ceil] * len(budgets))} | | | | | |")
            continue
        cells = " | ".join(_cell(r["test_at_calls"][str(b)]) for b in budgets)
        usd = ", ".join(f"{m['median']:.2f} @ ${d:.4f}"
                        for m, d in zip(r["test_at_usd"], r["usd_points"], strict=True))
        out.append(f"| {r['world']} | {r['optimizer']} | {r['seeds']} | {r['baseline_test']:.2f} "
                   f"| {cells} | {usd} | {r['metric_calls_median']:.0f} | "
                   f"{r['usd_median']:.4f} | {r['steps_median']:.0f} | {r['gap_median']:+.2f} |")
    return "\n".join(out)


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


_COLOURS = {"tgd": "#1f77b4", "tgd-batched": "#17becf", "trace": "#d62728", "opro": "#7f7f7f",
            "reflect": "#2ca02c", "reflect-lean": "#98df8a"}


def _scatter_panel(rows: list[dict[str, Any]], world: str, x0: int, y0: int) -> list[str]:
    """Classic world: test accuracy (median, IQR bar) against rollouts per optimizer."""
    w, h, pad = 260, 200, 40
    top = max((r["rollouts_median"] for r in rows), default=1) * 1.1 or 1
    mine = [r for r in rows if r["world"] == world]
    parts = [f'<text x="{x0 + pad}" y="{y0 + 12}" font-weight="bold">{world}</text>',
             f'<rect x="{x0 + pad}" y="{y0 + 20}" width="{w - pad - 10}" height="{h - 40}" '
             'fill="none" stroke="#999"/>']
    for tick in (0, 0.5, 1):
        y = y0 + 20 + (1 - tick) * (h - 40)
        parts.append(f'<text x="{x0 + 15}" y="{y + 3:.0f}">{tick:g}</text>')
    parts.append(f'<text x="{x0 + pad}" y="{y0 + h - 5}">rollouts (0-{top:.0f})</text>')
    for j, r in enumerate(mine):
        x = x0 + pad + (r["rollouts_median"] / top) * (w - pad - 10)
        y = y0 + 20 + (1 - r["test_median"]) * (h - 40)
        lo, hi = (y0 + 20 + (1 - v) * (h - 40) for v in r["test_iqr"])
        c = _COLOURS.get(r["optimizer"], "#000")
        parts.append(f'<line x1="{x:.1f}" y1="{lo:.1f}" x2="{x:.1f}" y2="{hi:.1f}" '
                     f'stroke="{c}"/><circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{c}"/>')
        parts.append(f'<text x="{x0 + w - 70}" y="{y0 + 32 + 12 * j}" fill="{c}">'
                     f'{r["optimizer"]}</text>')
    return parts


def _curve_panel(runs: list[dict[str, Any]], world: str, key: str, x0: int, y0: int,
                 label: str, ceiling_at: float | None = None) -> list[str]:
    """Hard world: test accuracy of the best-so-far candidate (median line, IQR band)
    against metric calls or dollars spent."""
    w, h, pad = 260, 200, 40
    mine = [r for r in runs if r["world"] == world]
    top = max(pt[key] for r in mine for pt in r["curve"]) or 1
    grid = [top * i / 40 for i in range(41)]
    parts = [f'<text x="{x0 + pad}" y="{y0 + 12}" font-weight="bold">{world}</text>',
             f'<rect x="{x0 + pad}" y="{y0 + 20}" width="{w - pad - 10}" height="{h - 40}" '
             'fill="none" stroke="#999"/>']
    for tick in (0, 0.5, 1):
        y = y0 + 20 + (1 - tick) * (h - 40)
        parts.append(f'<text x="{x0 + 15}" y="{y + 3:.0f}">{tick:g}</text>')
    top_text = f"${top:.3f}" if key == "usd" else f"{top:.0f}"
    parts.append(f'<text x="{x0 + pad}" y="{y0 + h - 5}">{label} (0-{top_text})</text>')

    def xy(x: float, v: float) -> str:
        return (f"{x0 + pad + x / top * (w - pad - 10):.1f},"
                f"{y0 + 20 + (1 - v) * (h - 40):.1f}")

    if ceiling_at is not None:
        parts.append(f'<polyline points="{xy(0, ceiling_at)} {xy(top, ceiling_at)}" fill="none" '
                     'stroke="#000" stroke-dasharray="4,3" stroke-width="0.8"/>')
        parts.append(f'<text x="{x0 + pad + 4}" y="{y0 + 20 + (1 - ceiling_at) * (h - 40) - 3:.1f}" '
                     f'fill="#555">ceiling {ceiling_at:.2f}</text>')

    for j, opt in enumerate(OPTIMIZERS):
        rs = [r for r in mine if r["optimizer"] == opt]
        if not rs:
            continue
        c = _COLOURS.get(opt, "#000")
        stats = [(g, statistics.median(at_budget(r, key, g) for r in rs),
                  _iqr([at_budget(r, key, g) for r in rs])) for g in grid]
        band = [xy(g, q[1]) for g, _, q in stats] + [xy(g, q[0]) for g, _, q in stats[::-1]]
        parts.append(f'<polygon points="{" ".join(band)}" fill="{c}" fill-opacity="0.12" '
                     'stroke="none"/>')
        parts.append(f'<polyline points="{" ".join(xy(g, m) for g, m, _ in stats)}" '
                     f'fill="none" stroke="{c}" stroke-width="1.5"/>')
        parts.append(f'<text x="{x0 + w - 70}" y="{y0 + h - 60 + 12 * j}" fill="{c}">'
                     f'{opt}</text>')
    return parts


def plot_svg(rows: list[dict[str, Any]], runs: list[dict[str, Any]] | None = None,
             ceilings: dict[str, list[float]] | None = None) -> str:
    """SIMULATED. Row 1: the classic worlds, test accuracy (median, IQR bar) against
    rollouts. Rows 2 and 3: the hard worlds, test accuracy of the best candidate so far
    (median line, IQR band over seeds) against metric calls and against estimated dollars."""
    runs = runs or []
    classic = [w for w in CLASSIC if any(r["world"] == w for r in rows)]
    hard = [w for w in HARD if any(r["world"] == w for r in runs)]
    w, h = 260, 200
    n_rows = (1 if classic else 0) + (2 if hard else 0)
    width = w * max(len(classic), len(hard), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{h * n_rows + 50}" font-family="sans-serif" font-size="10">',
             '<rect width="100%" height="100%" fill="white"/>']
    y0 = 0
    if classic:
        for i, world in enumerate(classic):
            parts += _scatter_panel(rows, world, i * w, y0)
        y0 += h
    if hard:
        for i, world in enumerate(hard):
            ceil = statistics.median(ceilings[world]) if ceilings and world in ceilings else None
            parts += _curve_panel(runs, world, "rollouts", i * w, y0, "metric calls", ceil)
            parts += _curve_panel(runs, world, "usd", i * w, y0 + h, "est. USD", ceil)
        y0 += 2 * h
    parts.append(f'<text x="5" y="{y0 + 20}">SIMULATED: stand-in models, not a real LLM. '
                 'Top: classic worlds, test (median, IQR) vs rollouts after 8 steps.</text>')
    if hard:
        seeds = len({r["seed"] for r in runs})
        parts.append(f'<text x="5" y="{y0 + 35}">Below: hard worlds, test accuracy of the '
                     f'best candidate so far (median, IQR band, {seeds} seeds) vs metric calls '
                     'and vs estimated dollars; dashed: every rule stated tersely.</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="2 seeds, small splits, few steps / a small budget: a smoke test")
    ap.add_argument("--seeds", type=int, default=None,
                    help="seeds per world (default: 5 classic, 10 hard; --quick: 2)")
    ap.add_argument("--steps", type=int, default=None, help="steps of a classic world")
    ap.add_argument("--cap", type=int, default=None, help="metric calls of a hard world")
    ap.add_argument("--worlds", default=",".join(WORLDS))
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    ap.add_argument("--noise", type=_noise_override, action="append", default=[],
                    metavar="KEY=VALUE", help="override a stand-in rate in every world, "
                    "e.g. prior=0 (no blind guesses); repeatable")
    ap.add_argument("--batch", type=int, default=4,
                    help="training minibatch size (default 4, the size the tables use)")
    ap.add_argument("--out", type=Path, default=HERE / "results.json",
                    help="where results go; quality.svg is redrawn only for the default")
    args = ap.parse_args(argv)
    NOISE_OVERRIDES.clear()
    NOISE_OVERRIDES.update(dict(args.noise))
    t0 = time.perf_counter()
    config = {k: dict(v) for k, v in (QUICK if args.quick else CONFIG).items()}
    if args.seeds:
        for cfg in config.values():
            cfg["seeds"] = args.seeds
    if args.steps:
        config["classic"]["steps"] = args.steps
    if args.cap:
        config["hard"]["cap"] = args.cap
    cap = config["hard"]["cap"]
    budgets = tuple(b for b in (QUICK_BUDGETS if args.quick else BUDGETS) if b <= cap) or (cap,)
    runs = []
    for world in args.worlds.split(","):
        cfg = config["hard" if world in HARD else "classic"]
        for opt in args.optimizers.split(","):
            for seed in range(cfg["seeds"]):
                r = run_one(world, opt, seed, steps=cfg["steps"], batch=args.batch, sizes=cfg["sizes"],
                            cap=cfg["cap"])
                print(f"SIMULATED {world:<19} {opt:<12} seed {seed}: test {r['test']:.2f} "
                      f"(baseline val {r['baseline_val']:.2f}), {r['metric_calls']} metric "
                      f"calls, ${r['usd']:.4f}, {r['steps']} steps, {r['seconds']} s",
                      file=sys.stderr)
                runs.append(r)
    classic_runs = [r for r in runs if r["world"] not in HARD]
    hard_runs = [r for r in runs if r["world"] in HARD]
    rows = summarise(classic_runs)
    ceilings = {w: [ceiling(w, seed, config["hard"]["sizes"])
                    for seed in range(config["hard"]["seeds"])]
                for w in args.worlds.split(",") if w in HARD}
    brows = budget_rows(hard_runs, budgets, ceilings) if hard_runs else []
    print("SIMULATED -- stand-in models, not a real LLM\n")
    if rows:
        print(f"Classic worlds ({config['classic']['steps']} steps):\n")
        print(table(rows))
    if brows:
        print(f"\nHard worlds (until {cap} metric calls, {config['hard']['seeds']} seeds):\n")
        print(budget_table(brows, budgets))
    seconds = round(time.perf_counter() - t0, 1)
    print(f"\n{len(runs)} runs in {seconds} s")
    if not args.quick and not args.noise and args.out == HERE / "results.json":
        (HERE / "quality.svg").write_text(plot_svg(rows, hard_runs, ceilings))
    noises = {w: vars(world_noise(w)) for w in args.worlds.split(",")}
    args.out.write_text(dump({
        "simulated": True, "quick": args.quick, "config": config, "batch": args.batch,
        "budgets": budgets, "seconds": seconds, "noise": noises, "summary": rows,
        "budget_summary": brows, "runs": runs}))
    return 0


def dump(doc: dict[str, Any]) -> str:
    """``doc`` as JSON: indented, except that each run is one line and its curve is stored
    by column ({"step": [...], "rollouts": [...], ...}), which keeps the file small."""
    runs = [{**r, "curve": {k: [pt[k] for pt in r["curve"]] for k in r["curve"][0]}}
            for r in doc["runs"]]
    head = json.dumps({**doc, "runs": []}, indent=1)
    body = ",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in runs)
    return head.replace('"runs": []', '"runs": [\n' + body + "\n ]") + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
