"""Few-shot demonstrations as a trainable parameter.

A prompt that shows the model two worked examples often beats a paragraph of rules, and
the best examples are ones the program itself got right: DSPy's bootstrapped demos made
that point. ``Demos`` is a Parameter whose value is a bounded list of ``{"input", "output"}``
pairs. The trainer offers it the step inputs and outputs of correct training examples
(:meth:`Demos.offer`) and proposes filling or swapping demos as a candidate that goes
through the same gate as any rewrite; TGD and the trace optimizer may add, drop or
replace demos too (the value is JSON, checked against :meth:`Demos.value_type`).

Demos reach a model as user/assistant turns before the real input (``LLMCall(...,
demos=d)``), or as text in a template (``{{ demos }}`` renders them as a list).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, Field

from .shorten import shorten
from .variable import Parameter

__all__ = ["Demo", "Demos", "demo_messages", "field_values"]

# one demo's input and output as stored and shown: long values are cut, so a demo that
# happened to be a 5,000-character ticket cannot crowd the real input out of the prompt
DEMO_TEXT_LIMIT = 1500
# successes remembered per parameter to choose demos from (the newest are kept)
CANDIDATE_LIMIT = 64


class Demo(BaseModel):
    """One demonstration: what the step was given and what it answered."""

    input: str = Field(min_length=1)
    output: str = Field(min_length=1)


def _demo(raw: Any, where: str) -> dict[str, str]:
    if isinstance(raw, Demo):
        return raw.model_dump()
    if not isinstance(raw, Mapping) or not {"input", "output"} <= set(raw):
        raise ValueError(f"{where}: a demo is a mapping with 'input' and 'output', got {raw!r}")
    out = {"input": str(raw["input"]), "output": str(raw["output"])}
    if not out["input"].strip() or not out["output"].strip():
        raise ValueError(f"{where}: a demo's input and output must not be empty")
    return out


class Demos(Parameter):
    """``Demos(max_demos=3)``: up to ``max_demos`` input/output examples, chosen by training."""

    kind = "demos"

    def __init__(self, demos: Iterable[Any] = (), *, max_demos: int = 4,
                 role: str = "few-shot demonstrations shown to the model before its input",
                 name: str | None = None, requires_grad: bool = True,
                 constraints: Iterable[str] = ()) -> None:
        if not isinstance(max_demos, int) or isinstance(max_demos, bool) or max_demos < 1:
            raise ValueError(f"max_demos must be a whole number of at least 1, got {max_demos!r}")
        value = [_demo(d, f"demo {i + 1}") for i, d in enumerate(demos)]
        if len(value) > max_demos:
            raise ValueError(f"{len(value)} demos given but max_demos is {max_demos}")
        self.max_demos = max_demos
        super().__init__(value, role=role, requires_grad=requires_grad, name=name,
                         constraints=constraints, value_kind="demos",
                         value_type=Annotated[list[Demo], Field(max_length=max_demos)])
        self.candidates: dict[str, dict[str, str]] = {}

    @property
    def text(self) -> str:
        return render_demos(self.value)

    def offer(self, inputs: str, output: str) -> None:
        """Remember a correct example of this step as a possible demo (bounded, de-duplicated)."""
        if not str(inputs).strip() or not str(output).strip():
            return
        d = {"input": shorten(str(inputs), DEMO_TEXT_LIMIT),
             "output": shorten(str(output), DEMO_TEXT_LIMIT)}
        self.candidates.pop(demo_key(d), None)
        self.candidates[demo_key(d)] = d
        while len(self.candidates) > CANDIDATE_LIMIT:
            self.candidates.pop(next(iter(self.candidates)))

    def unused(self) -> list[dict[str, str]]:
        """Remembered successes that are not demos yet, oldest first."""
        have = {demo_key(d) for d in self.value}
        return [d for k, d in self.candidates.items() if k not in have]


def demo_key(d: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps([d["input"], d["output"]]).encode()).hexdigest()[:16]


def render_demos(value: Any) -> str:
    """The demos as text, for a template field or a listing."""
    if not value:
        return "(no examples yet)"
    return "\n\n".join(f"Example {i}\nInput: {d['input']}\nOutput: {d['output']}"
                       for i, d in enumerate(value, 1))


def demo_messages(demos: Demos | None) -> list[dict[str, str]]:
    """Each demo as a user turn and the assistant's answer, for a chat request."""
    if demos is None:
        return []
    out: list[dict[str, str]] = []
    for d in demos.value:
        out += [{"role": "user", "content": d["input"]},
                {"role": "assistant", "content": d["output"]}]
    return out


def field_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    """What a template sees for each field variable: its value, or the rendered demos."""
    return {k: v.text if isinstance(v, Demos) else v.value for k, v in fields.items()}
