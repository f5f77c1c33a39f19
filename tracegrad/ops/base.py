"""The op record: what every traced op leaves on its output so backward can run.

An op call creates one ``Op`` and attaches it to the output variable (``out.op``). The
record names the op's inputs, knows how to describe the call as one code-like line
(used by the trace optimizer), and knows its own backward for the cases that need no
LLM: string ops, python functions, aggregations and losses pass feedback through.
LLM ops set ``uses_llm`` and let the textual propagator ask the backward engine.
"""

from __future__ import annotations

from typing import Any

from ..core.context import is_grad_enabled
from ..core.shorten import shorten
from ..core.variable import Feedback, Variable


def as_variable(x: Any, role: str = "input") -> Variable:
    return x if isinstance(x, Variable) else Variable(x, role=role, requires_grad=False)


class Op:
    kind = "op"
    uses_llm = False

    def __init__(self, name: str, inputs: dict[str, Variable], description: str = "") -> None:
        self.name = name
        self.inputs = inputs
        self.description = description

    def signature(self, out: Variable) -> str:
        args = ", ".join(f"{k}={v.name}" for k, v in self.inputs.items())
        return f"{out.name} = {self.name}({args})"

    def context(self, out: Variable, limit: int = 600) -> dict[str, Any]:
        return {
            "op": self.signature(out),
            "description": self.description,
            "output": shorten(out.value, limit),
        }

    def backward(self, out: Variable, ctx: Any = None) -> None:
        """Pass each piece of the output's feedback to every input that needs it."""
        context = self.context(out)
        for var in self.inputs.values():
            if not var.requires_grad:
                continue
            for g in out.grads:
                var.add_feedback(Feedback(g.text, source=out.name, context=carry(g, context)))


def carry(fb: Feedback, context: dict[str, Any]) -> dict[str, Any]:
    """``context`` plus the verdict flags of ``fb``, so "this was correct" survives routing."""
    flags = {k: fb.context[k] for k in ("success", "score") if k in fb.context}
    return {**context, **flags} if flags else context


def record(out: Variable, op: Op) -> Variable:
    """Attach ``op`` to ``out`` unless tracing is off (``tg.no_grad()``)."""
    if is_grad_enabled():
        out.set_parents(dict.fromkeys(op.inputs.values()).keys(), op)
        if out.auto_name:  # "llm_call12" reads better than "variable12" in a trace listing
            base = "".join(c if c.isalnum() or c == "_" else "_" for c in op.name)
            out.set_auto_name(base, out.id)  # backward renames it by graph position
    return out
