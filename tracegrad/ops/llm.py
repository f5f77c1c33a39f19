"""LLM ops: a call to a model is a node whose inputs are its prompt pieces.

The node keeps the exact messages it sent, so the textual propagator can show the
backward engine what the model saw when it asks how each input should change.
"""

from __future__ import annotations

from typing import Any

from .. import template as tpl
from ..core.variable import Parameter, Variable
from ..llm.base import Completion, Engine, Message, Request, make_content
from .base import Op, as_variable, record


class LLMOp(Op):
    kind = "llm"
    uses_llm = True

    def __init__(
        self,
        name: str,
        inputs: dict[str, Variable],
        messages: list[Message],
        model: str = "",
        description: str = "",
    ) -> None:
        super().__init__(name, inputs, description)
        self.messages = messages
        self.model = model


def _resolve(llm: Engine | str) -> Engine:
    if isinstance(llm, str):
        from ..llm import LLM

        return LLM(llm)
    return llm


class _Caller:
    def __init__(self, llm: Engine | str, params: dict[str, Any], response_role: str) -> None:
        self.llm = _resolve(llm)
        self.params = params
        self.response_role = response_role

    def _request(self, messages: list[Message], params: dict[str, Any]) -> Request:
        return Request(messages=messages, params={**self.params, **params}, purpose="forward")

    def _output(self, c: Completion, op: LLMOp) -> Variable:
        out = Variable(c.text, role=self.response_role)
        return record(out, op)

    def parameters(self) -> list[Parameter]:
        return [v for v in vars(self).values() if isinstance(v, Parameter)]


class LLMCall(_Caller):
    """``LLMCall(llm, system=...)(question)``: one chat call; system prompt and input are nodes."""

    def __init__(
        self,
        llm: Engine | str,
        system: Variable | str | None = None,
        *,
        role: str = "response of the language model",
        name: str = "llm_call",
        **params: Any,
    ) -> None:
        super().__init__(llm, params, role)
        self.system = as_variable(system, "system prompt") if system is not None else None
        self.name = name

    def _build(self, x: Any) -> tuple[list[Message], dict[str, Variable]]:
        inp = as_variable(x, "input to the language model")
        inputs: dict[str, Variable] = {}
        messages: list[Message] = []
        if self.system is not None:
            inputs["system"] = self.system
            messages.append({"role": "system", "content": self.system.text})
        inputs["input"] = inp
        messages.append({"role": "user", "content": make_content(inp.value)})
        return messages, inputs

    def __call__(self, x: Any, **params: Any) -> Variable:
        messages, inputs = self._build(x)
        c = self.llm.complete(self._request(messages, params))
        return self._output(c, LLMOp(self.name, inputs, messages, self.llm.model))

    async def acall(self, x: Any, **params: Any) -> Variable:
        messages, inputs = self._build(x)
        c = await self.llm.acomplete(self._request(messages, params))
        return self._output(c, LLMOp(self.name, inputs, messages, self.llm.model))


class FormattedLLMCall(_Caller):
    """A call whose user message is a Jinja2 template (sandboxed) filled with variables.

    The template may be a Parameter: that is how a prompt file's body is optimized.
    """

    def __init__(
        self,
        llm: Engine | str,
        template: Variable | str,
        system: Variable | str | None = None,
        *,
        role: str = "response of the language model",
        name: str = "formatted_llm_call",
        **params: Any,
    ) -> None:
        super().__init__(llm, params, role)
        self.template = as_variable(template, "prompt template")
        self.system = as_variable(system, "system prompt") if system is not None else None
        self.name = name

    def _build(self, fields: dict[str, Any]) -> tuple[list[Message], dict[str, Variable]]:
        vars_ = {k: as_variable(v, k) for k, v in fields.items()}
        text = tpl.render(self.template.text, {k: v.value for k, v in vars_.items()})
        inputs: dict[str, Variable] = {}
        messages: list[Message] = []
        if self.system is not None:
            inputs["system"] = self.system
            messages.append({"role": "system", "content": self.system.text})
        inputs["template"] = self.template
        inputs.update(vars_)
        messages.append({"role": "user", "content": text})
        return messages, inputs

    def render_messages(self, **fields: Any) -> list[Message]:
        """The messages a call with ``fields`` sends now, without calling (for exports)."""
        return self._build(fields)[0]

    def __call__(self, params: dict[str, Any] | None = None, /, **fields: Any) -> Variable:
        messages, inputs = self._build(fields)
        c = self.llm.complete(self._request(messages, params or {}))
        return self._output(c, LLMOp(self.name, inputs, messages, self.llm.model))

    async def acall(self, params: dict[str, Any] | None = None, /, **fields: Any) -> Variable:
        messages, inputs = self._build(fields)
        c = await self.llm.acomplete(self._request(messages, params or {}))
        return self._output(c, LLMOp(self.name, inputs, messages, self.llm.model))
