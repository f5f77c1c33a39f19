"""Backward: turning the evaluation at the end of a pipeline into feedback on its inputs.

Two propagators work on the same graph:

* :class:`TextualPropagator` (the TextGrad line): an LLM writes feedback for the inputs of
  every LLM call, one call per node (or per group of nodes sharing a parameter).
* :class:`TracePropagator` (the Trace line): no LLM call; each parameter receives the
  subgraph between it and the loss, for a whole-trace optimizer.
"""

from __future__ import annotations

import warnings
from typing import Any

from ..core import telemetry
from ..core.variable import Feedback, Parameter, Variable, name_by_position, topo_order
from .result import BackwardResult
from .textual import TextualPropagator
from .trace import TracePropagator


def wanted_propagator(root: Variable, engine: Any = None) -> Any:
    """The propagator the optimizers of ``root``'s parameters need, for a plain ``backward()``.

    ``loss.backward(); optimizer.step()`` is the PyTorch form, and it has to work for every
    optimizer without the user naming a propagator: a whole-trace optimizer needs the trace
    (and textual critiques would be five wasted calls it never reads), TGD needs critiques.
    Each optimizer marks its parameters when it is built; with none, or optimizers that
    disagree, backward writes textual feedback, which every optimizer can read.
    """
    wanted: dict[type, Any] = {}
    for v in topo_order(root):
        ref = getattr(v, "optimizer_ref", None) if isinstance(v, Parameter) else None
        opt = ref() if ref is not None else None
        if opt is None or not v.requires_grad:
            continue
        prop = opt.propagator() if getattr(opt, "needs_backward", True) else TracePropagator()
        prop = prop if prop is not None else TextualPropagator(engine=engine)
        wanted.setdefault(type(prop), prop)
    if len(wanted) == 1:
        return next(iter(wanted.values()))
    if len(wanted) > 1:
        warnings.warn("the parameters of this graph belong to optimizers that need different "
                      f"propagators ({', '.join(sorted(t.__name__ for t in wanted))}); "
                      "using TextualPropagator: pass propagator= to choose", stacklevel=3)
    return TextualPropagator(engine=engine)


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
        propagator = wanted_propagator(root)
    with telemetry.operation("backward", {"tracegrad.propagator": type(propagator).__name__,
                                          "tracegrad.root": root.name}) as op:
        result = propagator.run(root)
        if op is not None:
            telemetry.record_backward(op, root, result)
    return result


__all__ = ["BackwardResult", "TextualPropagator", "TracePropagator", "backward",
           "wanted_propagator"]
