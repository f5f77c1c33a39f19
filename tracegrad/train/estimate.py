"""What a run will cost, before it is made: calls, tokens and dollars per purpose.

The number of calls comes from the optimizer's own declaration of the calls one step
makes (:meth:`~tracegrad.optim.base.Optimizer.calls_per_step`, checked against a mock
engine in the tests), so the estimate cannot drift from the code as a hand-kept table
did (it had left out the feedback-summary calls). The token counts are heuristics: the
rendered prompt of every example, replies guessed from the expected answers, and the
size of each meta-prompt.

Per step the trainer makes, with the default gate: one forward call per batch example;
backward and optimizer calls as declared (assuming every example fails, the expensive
case); then the candidate is scored on the validation set, or on the batch without one.
"""

from __future__ import annotations

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
from ..llm.pricing import price_for
from ..optim.registry import calls_per_step

__all__ = ["TaskShape", "estimate_run", "nice_ceiling", "prompt_file_shape"]

BACKWARD_REPLY_TOKENS = 120
REASONING_TOKENS = 100
JUDGE_REPLY_TOKENS = 40
SUMMARY_REPLY_TOKENS = 300


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
        reply = max(40, want + want // 2 + 4)  # the answer, or a short explanation of it
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


def _optimizer_prompt(optimizer: str, task: TaskShape, batch: int, steps: int) -> float:
    """Tokens of one update request: meta-prompt, the text, feedback, history, rules."""
    body, mean_tr = task.template_tokens, task.means("train")
    rules = 40 * task.constraints + 150
    if optimizer.startswith("tgd"):
        feedback = min(batch * (BACKWARD_REPLY_TOKENS + 20), 1500)
        return _meta_tokens("tgd_update") + body + feedback + 3 * body + rules
    if optimizer == "trace":
        listing = min(batch * (mean_tr[0] + mean_tr[1] + 30), 4000)
        return _meta_tokens("trace_update") + body + listing + batch * 40 + 3 * body + rules
    board = min(steps, 20) / 2 * (body + 80)  # opro: a scoreboard of scored candidates
    return _meta_tokens("opro_update") + board + rules


def _backward_prompt(optimizer: str, task: TaskShape, per_call_examples: float) -> float:
    mean_tr = task.means("train")
    per_example = mean_tr[0] + mean_tr[1] + 80
    return _meta_tokens("textual_backward") + task.template_tokens + per_call_examples * \
        per_example + 60


def estimate_run(task: TaskShape, *, optimizer: str, steps: int, batch_size: int, model: str,
                 optimizer_model: str, concurrency: int = 8, beam: int = 1,
                 batch_eval: bool = False) -> dict[str, Any]:
    """Expected calls, tokens and dollars of a run; makes no call. ``batch_eval``: the
    baseline and full validations at Batch API prices, as ``optimize --batch-eval`` sends."""
    batch = min(batch_size, len(task.train))
    mean_tr, mean_va = task.means("train"), task.means("val")
    feedback_chars = 4 * BACKWARD_REPLY_TOKENS
    per = calls_per_step(optimizer, 1, batch, batch, feedback_chars=feedback_chars,
                         example_chars=int(4 * (mean_tr[0] + mean_tr[1])))
    rows = _Rows()
    if task.val:
        rows.add("baseline", model, len(task.val), *mean_va, batch=batch_eval)
    rows.add("forward", model, steps * batch, *mean_tr)
    if per["backward"]:
        rows.add("backward", optimizer_model, steps * per["backward"],
                 _backward_prompt(optimizer, task, batch / per["backward"]),
                 BACKWARD_REPLY_TOKENS)
    if per["summary"]:
        rows.add("summary", optimizer_model, steps * beam * per["summary"],
                 _meta_tokens("feedback_summary") + batch * (BACKWARD_REPLY_TOKENS + 20),
                 SUMMARY_REPLY_TOKENS)
    opt_prompt = _optimizer_prompt(optimizer, task, batch, steps)
    rows.add("optimizer", optimizer_model, steps * beam * per["optimizer"], opt_prompt,
             task.template_tokens + REASONING_TOKENS)
    if task.val:
        rows.add("validation", model, steps * beam * len(task.val), *mean_va, batch=batch_eval)
    else:
        rows.add("validation", model, steps * beam * batch, *mean_tr)
    if task.judge_tokens is not None:
        rows.add("judge", optimizer_model, rows.count("baseline", "forward", "validation"),
                 _meta_tokens("judge_system") + task.judge_tokens + 2 * mean_tr[1] + 40,
                 JUDGE_REPLY_TOKENS)
    return _summarise(rows.rows, task, optimizer=optimizer, steps=steps, batch_size=batch_size,
                      model=model, optimizer_model=optimizer_model, concurrency=concurrency,
                      opt_prompt=opt_prompt, per_step=per)


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
        "tokens are counted as about 4 characters each; replies are guessed from the expected "
        "outputs; every step is assumed to have failures to learn from",
        "early stops (a perfect validation score) and cache hits make a real run cheaper",
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


def nice_ceiling(x: float) -> float:
    """A round number at or above ``x`` (0.013 -> 0.02, 1.3 -> 2, 13 -> 20)."""
    if x <= 0:
        return 0.01
    mag = 10 ** math.floor(math.log10(x))
    for step in (1, 2, 5, 10):
        if step * mag >= x:
            return round(step * mag, 10)
    return round(10 * mag, 10)
