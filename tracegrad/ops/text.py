"""String ops. Their backward is plain routing: no LLM call, each input gets the
feedback on the whole, told which part of the whole it was."""

from __future__ import annotations

from typing import Any

from .. import template as tpl
from ..core.demos import field_values
from ..core.shorten import shorten
from ..core.variable import Feedback, Variable
from .base import Op, as_variable, carry, record


class FormatOp(Op):
    kind = "format"

    def backward(self, out: Variable, ctx: Any = None) -> None:
        for field_name, var in self.inputs.items():
            if not var.requires_grad:
                continue
            context = {
                "op": self.signature(out),
                "output": shorten(out.value, 600),
                "note": f"this variable was inserted as '{field_name}' into the formatted text",
            }
            for g in out.grads:
                var.add_feedback(Feedback(g.text, source=out.name, context=carry(g, context)))


def format(template: str | Variable, /, role: str = "formatted text", **fields: Any) -> Variable:
    """Render a Jinja2 template (sandboxed) whose fields are variables.

    The template itself may be a Parameter; it then receives the feedback too.
    """
    t = as_variable(template, "template")
    vars_ = {k: as_variable(v, k) for k, v in fields.items()}
    text = tpl.render(t.text, field_values(vars_))
    inputs = {"template": t, **vars_} if isinstance(template, Variable) else vars_
    return record(Variable(text, role=role), FormatOp("format", inputs))


def concat(*parts: Any, sep: str = "\n", role: str = "concatenated text") -> Variable:
    vars_ = {f"part{i}": as_variable(p, f"part {i}") for i, p in enumerate(parts)}
    text = sep.join(v.text for v in vars_.values())
    return record(Variable(text, role=role), FormatOp("concat", vars_))
