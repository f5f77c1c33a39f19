"""Backward: turning the evaluation at the end of a pipeline into feedback on its inputs.

Two propagators work on the same graph:

* :class:`TextualPropagator` (the TextGrad line): an LLM writes feedback for the inputs of
  every LLM call, one call per node (or per group of nodes sharing a parameter).
* :class:`TracePropagator` (the Trace line): no LLM call; each parameter receives the
  subgraph between it and the loss, for a whole-trace optimizer.
"""

from __future__ import annotations

from typing import Any

from ..core import telemetry
from ..core.variable import Feedback, Variable, name_by_position
from .result import BackwardResult
from .textual import TextualPropagator
from .trace import TracePropagator


def backward(root: Variable, feedback: str | None = None, propagator: Any = None) -> BackwardResult:
    name_by_position(root)  # before any name reaches a request (see name_by_position)
    if feedback is not None:
        root.add_feedback(Feedback(feedback, source="user"))
    elif root.is_objective:
        root.add_feedback(Feedback(root.text, source=root.name))
    elif not root.grads:
        raise ValueError(
            f"{root.name} is not an objective (a loss or an error): pass feedback='what is wrong'"
        )
    if propagator is None:
        propagator = TextualPropagator()
    with telemetry.operation("backward", {"tracegrad.propagator": type(propagator).__name__,
                                          "tracegrad.root": root.name}) as op:
        result = propagator.run(root)
        if op is not None:
            telemetry.record_backward(op, root, result)
    return result


__all__ = ["BackwardResult", "TextualPropagator", "TracePropagator", "backward"]
