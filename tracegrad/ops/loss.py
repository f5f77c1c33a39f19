"""Losses turn an output into an evaluation in words -- the starting point of backward.

A loss's output is an *objective*: its value is the evaluation, and backward starts
from it. ``MetricLoss`` needs no LLM (a Python metric's score plus an explanation such
as expected vs. got); ``TextLoss`` and ``MultiFieldEvaluation`` ask a judge model.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from typing import Any

from .. import prompts
from ..core.context import get_backward_llm
from ..core.shorten import shorten
from ..core.variable import Feedback, Variable
from ..llm.base import Engine, Request
from .base import Op, as_variable, record


def normalize_metric_result(result: Any, prediction: Any = None, expected: Any = None) -> tuple[float, str]:
    """Accept ``float``, ``bool`` or ``(float, str)`` from a metric; return (score, explanation)."""
    explanation = ""
    if isinstance(result, tuple) and len(result) == 2:
        result, explanation = result
    try:
        score = float(result)
    except (TypeError, ValueError):
        raise TypeError(f"a metric must return a number or (number, str), got {result!r}") from None
    if score != score:  # NaN
        score = 0.0
    score = min(1.0, max(0.0, score))
    if not explanation:
        exp, got = shorten(expected, 300), shorten(prediction, 300)
        explanation = (
            f"Correct: expected {exp!r} and got it."
            if score >= 1.0
            else f"Wrong (score {score:.2f}): expected {exp!r}, got {got!r}."
        )
    return score, str(explanation)


class LossOp(Op):
    kind = "loss"

    def context(self, out: Variable, limit: int = 600) -> dict[str, Any]:
        ctx = super().context(out, limit)
        if out.score is not None:
            ctx["score"] = out.score
            ctx["success"] = out.score >= 1.0
        return ctx

    # backward: Op.backward routes the evaluation to the evaluated inputs as it is, with
    # this context (its score tells the optimizer whether the example succeeded)


def _objective(value: str, op: Op, score: float | None = None, role: str = "evaluation") -> Variable:
    out = Variable(value, role=role)
    out.is_objective = True
    out.score = score
    return record(out, op)


class MetricLoss:
    """Score an output with a Python metric; the explanation is the feedback. No LLM call."""

    def __init__(self, metric: Callable[[Any, Any], Any], name: str | None = None) -> None:
        self.metric = metric
        self.name = name or getattr(metric, "__name__", "metric")

    def __call__(self, prediction: Any, expected: Any = None) -> Variable:
        pred = as_variable(prediction, "prediction")
        exp_value = expected.value if isinstance(expected, Variable) else expected
        score, explanation = normalize_metric_result(
            self.metric(pred.value, exp_value), pred.value, exp_value
        )
        op = LossOp(f"metric:{self.name}", {"prediction": pred}, description=f"metric {self.name}")
        return _objective(explanation, op, score)


class TextLoss:
    """An LLM judge: ``TextLoss("Is the answer correct? Criticize it.")(answer)``."""

    def __init__(self, instruction: str | Variable, engine: Engine | None = None) -> None:
        self.instruction = as_variable(instruction, "evaluation instruction")
        self.engine = engine

    def __call__(self, x: Any) -> Variable:
        var = as_variable(x, "output to evaluate")
        engine = self.engine or get_backward_llm()
        user = (
            f"Evaluation instruction:\n{self.instruction.text}\n\n"
            f"Work to evaluate ({var.role or 'value'}):\n<work>\n{shorten(var.value, 8000)}\n</work>"
        )
        req = Request(
            messages=[
                {"role": "system", "content": prompts.load("judge_system")},
                {"role": "user", "content": user},
            ],
            purpose="judge",
        )
        c = engine.complete(req)
        op = LossOp("text_loss", {"evaluated": var, "instruction": self.instruction},
                    description=self.instruction.text)
        return _objective(c.text, op)


class MultiFieldEvaluation:
    """A judge that sees several named fields (question, answer, reference, ...)."""

    def __init__(self, instruction: str | Variable, engine: Engine | None = None) -> None:
        self.instruction = as_variable(instruction, "evaluation instruction")
        self.engine = engine

    def __call__(self, **fields: Any) -> Variable:
        vars_ = {k: as_variable(v, k) for k, v in fields.items()}
        engine = self.engine or get_backward_llm()
        body = "\n\n".join(
            f"<{k} role=\"{v.role}\">\n{shorten(v.value, 4000)}\n</{k}>" for k, v in vars_.items()
        )
        req = Request(
            messages=[
                {"role": "system", "content": prompts.load("judge_system")},
                {"role": "user", "content": f"Evaluation instruction:\n{self.instruction.text}\n\n{body}"},
            ],
            purpose="judge",
        )
        c = engine.complete(req)
        op = LossOp("multi_field_evaluation", {**vars_, "instruction": self.instruction},
                    description=self.instruction.text)
        return _objective(c.text, op)


class AggregateOp(Op):
    kind = "aggregate"

    def backward(self, out: Variable, ctx: Any = None) -> None:
        """Each input gets the feedback that concerns it, not the whole batch's text."""
        for var in self.inputs.values():
            if not var.requires_grad:
                continue
            if var.is_objective:
                var.add_feedback(Feedback(var.text, source=var.name))
            else:
                for g in out.grads:
                    var.add_feedback(Feedback(g.text, source=out.name))


AGGREGATE_ITEM_LIMIT = 600  # one example's evaluation in an aggregate's text


def aggregate(losses: Sequence[Variable], role: str = "aggregated evaluation",
              limit: int = AGGREGATE_ITEM_LIMIT) -> Variable:
    """Combine per-example losses into one objective whose backward routes per example.

    Its text (what a whole-trace optimizer reads) cuts each example to ``limit`` chars."""
    vars_ = [as_variable(v, "evaluation") for v in losses]
    if not vars_:
        raise ValueError("aggregate() needs at least one loss")
    scores = [v.score for v in vars_ if v.score is not None]
    text = "\n".join(f"[{i}] {shorten(v.value, limit)}" for i, v in enumerate(vars_))
    op = AggregateOp("aggregate", {f"loss{i}": v for i, v in enumerate(vars_)})
    return _objective(text, op, builtins.sum(scores) / len(scores) if scores else None, role)


def sum(losses: Sequence[Variable]) -> Variable:  # noqa: A001 - mirrors torch.sum
    return aggregate(losses)
