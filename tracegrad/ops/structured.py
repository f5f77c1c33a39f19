"""Typed outputs: a reply validated as a pydantic model, with its fields as graph nodes.

``LLMCall(llm, response_format=Answer)(q)`` returns a :class:`StructuredVariable` whose
value is the ``Answer`` instance. ``out["reasoning"]`` (or ``out.field("reasoning")``) is a
traced op, so a metric or a judge can look at one field and its feedback says which field
was wrong when it reaches the call that produced the object.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ..core.shorten import shorten
from ..core.variable import Feedback, Variable
from .base import Op, carry, record


class FieldOp(Op):
    kind = "field"

    def backward(self, out: Variable, ctx: Any = None) -> None:
        """Feedback on a field goes to the whole object, naming the field it was about."""
        context = self.context(out)
        field = self.name.split(".", 1)[-1]
        for var in self.inputs.values():
            if not var.requires_grad:
                continue
            for g in out.grads:
                text = f"About the field `{field}` ({shorten(out.value, 300)}): {g.text}"
                var.add_feedback(Feedback(text, source=out.name, context=carry(g, context)))


class StructuredVariable(Variable):
    """A Variable whose value is a pydantic model instance; fields are traced ops."""

    def field(self, name: str) -> Variable:
        value = self.value
        if not isinstance(value, BaseModel) or name not in type(value).model_fields:
            fields = ", ".join(type(value).model_fields) if isinstance(value, BaseModel) else ""
            raise KeyError(f"{self.name} has no field {name!r} (fields: {fields or 'none'})")
        out = Variable(getattr(value, name), role=f"field `{name}` of {self.role}")
        op = FieldOp(f"field.{name}", {"object": self},
                     f"the field `{name}` of the structured reply")
        return record(out, op)

    def __getitem__(self, name: str) -> Variable:
        return self.field(name)


def check_response_format(fmt: Any) -> type[BaseModel] | None:
    """``fmt`` if it is a pydantic model class (or None); a TypeError naming it otherwise."""
    if fmt is None or (isinstance(fmt, type) and issubclass(fmt, BaseModel)):
        return fmt
    raise TypeError(f"response_format must be a pydantic BaseModel subclass, got {fmt!r}")


__all__ = ["FieldOp", "StructuredVariable", "check_response_format"]
