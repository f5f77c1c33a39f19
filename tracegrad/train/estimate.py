"""What a run will cost, before it is made: calls, tokens and dollars per purpose.

The number of calls comes from the optimizer's own declaration of the calls one step
makes (:meth:`~tracegrad.optim.base.Optimizer.calls_per_step`, checked against a mock
engine in the tests), so the estimate cannot drift from the code as a hand-kept table
did (it had left out the feedback-summary calls). The token counts are heuristics: the
rendered prompt of every example, replies about as long as the expected answers, and the
size of each meta-prompt.

Per step the trainer makes, with the default gate: one forward call per batch example;
if any of them failed, backward and optimizer calls as declared for that many failures,
then the candidate is scored on the validation set (or on the batch without one). How
many steps find failures, and how many, depends on the prompt's accuracy, which no call
has measured: the expected figures assume ``accuracy`` (default 0.5, ``--accuracy``).

Early stopping cannot be predicted either (a perfect validation score ends a run after
any step), so the estimate is a range: from the run that stops as early as it can to the
one where every example fails and every repair is needed (:func:`_range`). Checked on the
bundled prompt files by ``benchmarks/estimate_accuracy.py``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import prompts
from ..core.shorten import render
from ..llm.base import (
    DEFAULT_COMPLETION_LIMITS,
    REASONING_LIMIT_FACTOR,
    Usage,
    estimate_tokens,
    is_reasoning_model,
)
from ..llm.limits import DEFAULT_MAX_CONCURRENCY
from ..llm.pricing import price_for
from ..optim.registry import calls_per_step

__all__ = ["TaskShape", "estimate_run", "nice_ceiling", "prompt_file_shape"]

BACKWARD_REPLY_TOKENS = 120
REASONING_TOKENS = 100
JUDGE_REPLY_TOKENS = 40
SUMMARY_REPLY_TOKENS = 300
GROWTH_TOKENS = 25  # what one rewrite adds to the template: about one sentence
KEPT = 0.5  # share of rewrites the gate keeps
IMPROVES = 0.5  # share of the gap to a perfect score an optimized prompt closes by the end
DEFAULT_ACCURACY = 0.5  # share of training examples already right, unless told
_TASK_PURPOSES = ("baseline", "forward", "validation")


@dataclass(frozen=True)
class TaskShape:
    """What the estimate needs to know about a task, measured without a call."""

    train: Sequence[tuple[int, int]]  # (prompt, reply) tokens of each training example
    val: Sequence[tuple[int, int]]  # the same for validation (empty: none)
    template_tokens: int  # the trainable text, as the optimizer sees it
    constraints: int = 0
    judge_tokens: int | None = None  # the judge's rubric; None: no LLM judge
    reply_cap: int | None = None  # max_tokens of the task's calls

    def means(self, split: str) -> tuple[float, float]:
        rows = (self.val or self.train) if split == "val" else self.train
        return (sum(p for p, _ in rows) / len(rows), sum(c for _, c in rows) / len(rows))


def prompt_file_shape(pf: Any, train: Iterable[Any], val: Iterable[Any] | None) -> TaskShape:
    """The shape of a prompt file's task: its template rendered for every example."""
    cap = pf.params.get("max_tokens") or pf.params.get("max_completion_tokens")

    def tokens(ex: Any) -> tuple[int, int]:
        text = pf.prompt_text(ex.inputs)  # every message, whatever the file's format
        prompt = estimate_tokens(text) + 4 + (estimate_tokens(pf.system) + 4 if pf.system else 0)
        want = estimate_tokens(render(ex.expected))
        reply = want + max(2, want // 4)  # about the answer's length; chattier: the range
        return prompt, min(reply, int(cap)) if cap else reply

    judge = None
    if pf.uses_judge:
        rubric = pf.metric.get("judge", "") if isinstance(pf.metric, dict) else pf.metric
        judge = estimate_tokens(str(rubric))
    return TaskShape(
        train=[tokens(ex) for ex in train],
        val=[tokens(ex) for ex in val] if val is not None else [],
        template_tokens=estimate_tokens(pf.body),
        constraints=len(pf.constraints),
        judge_tokens=judge,
        reply_cap=int(cap) if cap else None,
    )


def _meta_tokens(name: str) -> int:
    try:
        return estimate_tokens(prompts.load(name))
    except (KeyError, OSError):
        return 300


class _Rows:
    """The estimate's table: one row per purpose and model."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, purpose: str, spec: str, calls: float, prompt: float,
            completion: float, batch: bool = False) -> None:
        """A row; ``batch``: sent through the Batch API, priced at batch prices."""
        n = int(round(calls))
        if n <= 0:
            return
        usage = Usage(int(round(calls * prompt)), int(round(calls * completion)))
        price = price_for(spec)
        self.rows.append({"purpose": purpose, "model": spec, "calls": n,
                          "prompt_tokens": usage.prompt_tokens,
                          "completion_tokens": usage.completion_tokens,
                          "usd": price.cost(usage, batch=batch), "priced": price.known,
                          "batch": batch})

    def count(self, *purposes: str) -> int:
        return sum(r["calls"] for r in self.rows if r["purpose"] in purposes)


def _optimizer_prompt(optimizer: str, task: TaskShape, batch: int, steps: int,
                      failing: int | None = None) -> float:
    """Tokens of one update request: meta-prompt, the text, feedback, history, rules.
    TGD reads the feedback of the ``failing`` examples; trace lists the whole batch."""
    body, mean_tr = task.template_tokens, task.means("train")
    failing = batch if failing is None else failing
    rules = 40 * task.constraints + 150
    if optimizer.startswith("tgd"):
        feedback = min(failing * (BACKWARD_REPLY_TOKENS + 20), 1500)
        return _meta_tokens("tgd_update") + body + feedback + 3 * body + rules
    if optimizer == "trace":
        # per example: its inputs, the call and its output, the metric's line and verdict
        listing = min(batch * (mean_tr[0] + mean_tr[1] + 80), 4000)
        return _meta_tokens("trace_update") + body + listing + failing * 40 + 3 * body + rules
    board = min(steps, 20) / 2 * (body + 80)  # opro: a scoreboard of scored candidates
    return _meta_tokens("opro_update") + board + rules


def _backward_prompt(optimizer: str, task: TaskShape, per_call_examples: float) -> float:
    mean_tr = task.means("train")
    per_example = mean_tr[0] + mean_tr[1] + 80
    return _meta_tokens("textual_backward") + task.template_tokens + per_call_examples * \
        per_example + 60


class _Sums:
    """Calls and tokens per (purpose, model), summed step by step, then one row each."""

    def __init__(self) -> None:
        self.sums: dict[tuple[str, str, bool], list[float]] = {}

    def add(self, purpose: str, spec: str, calls: float, prompt: float,
            completion: float, batch: bool = False) -> None:
        s = self.sums.setdefault((purpose, spec, batch), [0.0, 0.0, 0.0])
        s[0], s[1], s[2] = s[0] + calls, s[1] + calls * prompt, s[2] + calls * completion

    def rows(self) -> _Rows:
        rows = _Rows()
        for (purpose, spec, batch), (calls, prompt, completion) in self.sums.items():
            if calls > 0:
                rows.add(purpose, spec, calls, prompt / calls, completion / calls, batch=batch)
        return rows


def accuracy_at(accuracy: float, k: int, steps: int, improves: float = IMPROVES) -> float:
    """The prompt's accuracy at step ``k``: an optimized prompt gets better, assumed to
    close ``improves`` of its gap to perfect by the last step (linearly)."""
    return accuracy + (1.0 - accuracy) * improves * (k - 1) / max(1, steps - 1)


def _task_rows(task: TaskShape, *, optimizer: str, steps: int, batch: int, model: str,
               optimizer_model: str, beam: int, accuracy: float, improves: float,
               batch_eval: bool = False) -> tuple[_Rows, dict[str, int], float]:
    """The table for a starting accuracy: (rows, calls of a typical step, opt prompt).

    A step whose minibatch is all right stops after its forward calls (no backward, no
    rewrite, no validation); with accuracy ``a`` that happens with probability ``a**batch``,
    and a step that goes on has ``batch * (1 - a) / (1 - a**batch)`` failures on average.
    The template grows by a sentence per kept rewrite, so later steps send more tokens.
    """
    mean_tr, mean_va = task.means("train"), task.means("val")
    sums, grown, per_cache = _Sums(), 0.0, {}
    if task.val:
        sums.add("baseline", model, len(task.val), *mean_va, batch=batch_eval)
    typical: dict[str, int] = {}
    opt_prompt = 0.0
    for k in range(1, steps + 1):
        a = accuracy_at(accuracy, k, steps, improves)
        learn = 1.0 - a ** batch  # the chance this step has something to learn from
        failing = max(1, round(batch * (1.0 - a) / learn)) if learn > 0 else 1
        if failing not in per_cache:
            per_cache[failing] = calls_per_step(
                optimizer, 1, failing, batch, feedback_chars=4 * BACKWARD_REPLY_TOKENS,
                example_chars=int(4 * (mean_tr[0] + mean_tr[1])))
        per = per_cache[failing]
        typical = typical or per
        t = dataclasses.replace(task, template_tokens=int(task.template_tokens + grown))
        sums.add("forward", model, batch, mean_tr[0] + grown, mean_tr[1])
        if per["backward"]:
            sums.add("backward", optimizer_model, learn * per["backward"],
                     _backward_prompt(optimizer, t, failing / per["backward"]),
                     BACKWARD_REPLY_TOKENS)
        if per["summary"]:
            sums.add("summary", optimizer_model, learn * beam * per["summary"],
                     _meta_tokens("feedback_summary") + failing * (BACKWARD_REPLY_TOKENS + 20),
                     SUMMARY_REPLY_TOKENS)
        prompt = _optimizer_prompt(optimizer, t, batch, steps, failing)
        opt_prompt = max(opt_prompt, prompt)
        sums.add("optimizer", optimizer_model, learn * beam * per["optimizer"], prompt,
                 t.template_tokens + REASONING_TOKENS)
        candidate = grown + GROWTH_TOKENS  # a candidate is one rewrite longer
        if task.val:
            sums.add("validation", model, learn * beam * len(task.val), mean_va[0] + candidate,
                     mean_va[1], batch=batch_eval)
        else:
            sums.add("validation", model, learn * beam * batch, mean_tr[0] + candidate,
                     mean_tr[1])
        grown += GROWTH_TOKENS * learn * KEPT
    rows = sums.rows()
    if task.judge_tokens is not None:
        rows.add("judge", optimizer_model, rows.count("baseline", "forward", "validation"),
                 _meta_tokens("judge_system") + task.judge_tokens + 2 * mean_tr[1] + 40,
                 JUDGE_REPLY_TOKENS)
    return rows, typical, opt_prompt


def estimate_run(task: TaskShape, *, optimizer: str, steps: int, batch_size: int, model: str,
                 optimizer_model: str, concurrency: int = DEFAULT_MAX_CONCURRENCY, beam: int = 1,
                 accuracy: float = DEFAULT_ACCURACY, improves: float = IMPROVES,
                 batch_eval: bool = False) -> dict[str, Any]:
    """Expected calls, tokens and dollars of a run, and the range it can fall in; makes no
    call. ``accuracy`` is the share of training examples the prompt already gets right
    (a guess, e.g. from ``tracegrad eval``): it sets how many steps find failures and how
    many failures each has, which is what backward, rewrite and validation calls depend on.
    ``improves``: the share of the gap to a perfect score the run is assumed to close by
    its last step (0: the accuracy stays as it is). ``batch_eval``: the baseline and full
    validations at Batch API prices, as ``optimize --batch-eval`` sends them.
    """
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be between 0 and 1, not {accuracy}")
    batch = min(batch_size, len(task.train))
    shape = {"optimizer": optimizer, "steps": steps, "batch": batch, "model": model,
             "optimizer_model": optimizer_model, "beam": beam, "batch_eval": batch_eval}
    rows, per, opt_prompt = _task_rows(task, accuracy=accuracy, improves=improves, **shape)
    worst, _, _ = _task_rows(task, accuracy=0.0, improves=0.0, **shape)
    out = _summarise(rows.rows, task, optimizer=optimizer, steps=steps, batch_size=batch_size,
                     model=model, optimizer_model=optimizer_model, concurrency=concurrency,
                     opt_prompt=opt_prompt, per_step=per)
    out["accuracy"], out["improves"] = accuracy, improves
    out["range"] = _range(rows.rows, worst.rows, optimizer, steps, batch, bool(task.val))
    out["per_step"] = _per_step(rows.rows, steps, batch)
    return out


def _upper_usd(rows: list[dict[str, Any]], task: TaskShape, optimizer: str, steps: int,
               batch: int) -> float:
    """Every reply twice as long, 20% retries, and every repair the declaration allows."""
    worst = calls_per_step(optimizer, 1, batch, batch, worst=True)
    repair_factor = 1.0 + worst["repair"] / max(1, worst["optimizer"] + worst["backward"])
    upper = 0.0
    for r in rows:
        factor = max(repair_factor, 1.2) if r["purpose"] in ("optimizer", "backward") else 1.2
        upper += factor * price_for(r["model"]).cost(
            Usage(r["prompt_tokens"], 2 * r["completion_tokens"]), batch=r.get("batch", False))
    return upper


def _summarise(rows: list[dict[str, Any]], task: TaskShape, *, optimizer: str, steps: int,
               batch_size: int, model: str, optimizer_model: str, concurrency: int,
               opt_prompt: float, per_step: dict[str, int]) -> dict[str, Any]:
    total = {k: sum(r[k] for r in rows) for k in ("calls", "prompt_tokens", "completion_tokens")}
    total["usd"] = sum(r["usd"] for r in rows)
    batch = min(batch_size, len(task.train))
    upper = _upper_usd(rows, task, optimizer, steps, batch)
    # a budget reserves each call's worst case before sending it (prompt + max_tokens),
    # so concurrent calls need headroom under the limit
    def worst_reply(spec: str, purpose: str) -> int:  # what the engine sends and reserves
        factor = REASONING_LIMIT_FACTOR if is_reasoning_model(spec.split(":")[-1]) else 1
        return DEFAULT_COMPLETION_LIMITS[purpose] * factor

    worst_call = max(
        price_for(model).cost(Usage(int(opt_prompt), task.reply_cap
                                    or worst_reply(model, "forward"))),
        price_for(optimizer_model).cost(Usage(int(opt_prompt),
                                              worst_reply(optimizer_model, "optimizer"))))
    headroom = concurrency * worst_call
    notes = [
        "tokens are counted as about 4 characters each; task replies are assumed about as "
        "long as the expected outputs (a chattier model spends more output tokens)",
        "a run stops early on a perfect validation score, and cache hits are free: both make "
        "a real run cheaper, down to the low end of the range",
    ]
    if headroom > 0:
        notes.append(f"a budget reserves each call's worst case before sending it: with "
                     f"--concurrency {concurrency} it needs about ${headroom:.4f} of headroom, "
                     "included in the suggestion")
    unpriced = sorted({r["model"] for r in rows if not r["priced"]})
    if unpriced:
        notes.append(f"no price known for {', '.join(unpriced)}: counted as $0 (set "
                     "$TRACEGRAD_PRICING to a JSON price table)")
    if any(r.get("batch") for r in rows):
        notes.append("baseline and validation rows at Batch API prices (--batch-eval); each "
                     "such evaluation waits up to the provider's window")
    if not per_step["backward"]:
        notes.append(f"{optimizer} makes no backward calls")
    return {
        "optimizer": optimizer, "steps": steps, "batch_size": batch_size,
        "train_size": len(task.train), "val_size": len(task.val), "model": model,
        "optimizer_model": optimizer_model, "calls_per_step": per_step, "rows": rows,
        "total": total, "upper_usd": upper, "budget_headroom_usd": headroom,
        "suggested_budget_usd": nice_ceiling(upper * 1.2 + headroom), "calls_made": 0,
        "notes": notes,
    }


def _tally(rows: Iterable[dict[str, Any]], reply_factor: float = 1.0,
           extra_reply: int = 0) -> dict[str, Any]:
    calls = prompt = completion = 0
    usd = 0.0
    for r in rows:
        c = int(reply_factor * r["completion_tokens"]) + (
            extra_reply * r["calls"] if r["purpose"] in _TASK_PURPOSES else 0)
        calls, prompt, completion = calls + r["calls"], prompt + r["prompt_tokens"], completion + c
        usd += price_for(r["model"]).cost(Usage(r["prompt_tokens"], c))
    return {"calls": calls, "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "usd": usd}


def _range(rows: list[dict[str, Any]], worst: list[dict[str, Any]], optimizer: str,
           steps: int, batch: int, has_val: bool) -> dict[str, Any]:
    """Where a real run can land. Low: it stops as early as it can -- a perfect baseline
    on the validation set ends it before the first step (without one, every step finds its
    minibatch right and stops after its forward calls). High: every example of every step
    is wrong, every repair the optimizer declares is needed, and replies are twice as long
    (task replies 40 tokens longer still)."""
    early = ("baseline",) if has_val else ("baseline", "forward")
    low = _tally(r for r in rows if r["purpose"] in early)
    repairs = steps * calls_per_step(optimizer, 1, batch, batch, worst=True)["repair"]
    high = _tally(worst, reply_factor=2.0, extra_reply=40)
    high["rows"] = [{k: r[k] for k in ("purpose", "model", "calls")} for r in worst]
    if repairs:
        opt = [r for r in worst if r["purpose"] == "optimizer"]
        mean = _tally(opt) if opt else None
        if mean and mean["calls"]:
            for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
                high[k] += int(repairs * mean[k] / mean["calls"])
            high["usd"] += repairs * mean["usd"] / mean["calls"]
        high["calls"] += repairs
    return {"low": low, "high": high,
            "low_means": "a perfect validation score at the baseline ends the run at once"
            if has_val else "every minibatch already right: each step stops after its forward "
            "calls"}


def _per_step(rows: list[dict[str, Any]], steps: int, batch: int) -> dict[str, Any]:
    """What one step costs on average, and a step whose minibatch is already all right."""
    step_rows = [r for r in rows if r["purpose"] != "baseline"]
    t = _tally(step_rows)
    return {"calls": round(t["calls"] / steps, 1) if steps else 0.0,
            "total_tokens": int(t["total_tokens"] / steps) if steps else 0,
            "usd": t["usd"] / steps if steps else 0.0, "skipped_step_calls": batch}


def nice_ceiling(x: float) -> float:
    """A round number at or above ``x`` (0.013 -> 0.02, 1.3 -> 2, 13 -> 20)."""
    if x <= 0:
        return 0.01
    mag = 10 ** math.floor(math.log10(x))
    for step in (1, 2, 5, 10):
        if step * mag >= x:
            return round(step * mag, 10)
    return round(10 * mag, 10)
