"""LLM ops: a call to a model is a node whose inputs are its prompt pieces.

The node keeps the exact messages it sent, so the textual propagator can show the
backward engine what the model saw when it asks how each input should change.
"""

from __future__ import annotations

from typing import Any, NoReturn

from ..core.demos import Demos, demo_messages, field_values
from ..core.variable import Parameter, Variable
from ..llm.base import (
    Completion,
    Engine,
    Message,
    Request,
    StructuredOutputError,
    TokenCallback,
    make_content,
)
from ..llm.structured import acomplete_structured, complete_structured
from .base import Op, as_variable, record
from .content import render_content
from .messages import is_message_list, normalize_messages
from .python import ExecutionError
from .structured import StructuredVariable, check_response_format


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
        tools: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(name, inputs, description)
        self.messages = messages
        self.model = model
        self.tools = tools


def _resolve(llm: Engine | str) -> Engine:
    if isinstance(llm, str):
        from ..llm import LLM

        return LLM(llm)
    return llm


_SETTING_TYPES: dict[str, type] = {
    "temperature": float, "top_p": float, "presence_penalty": float,
    "frequency_penalty": float, "max_tokens": int, "max_completion_tokens": int,
    "seed": int, "n": int,
}
_CALL_OPTIONS = ("response_format", "stream", "on_token")


def setting_value(name: str, value: Any) -> Any:
    """A sampling setting taken from a Parameter, as the number the server expects.

    An optimizer may write ``"0.3"`` for a number: it is converted; something that is no
    number at all is a ValueError naming the setting, before anything is sent.
    """
    kind = _SETTING_TYPES.get(name)
    if kind is None or isinstance(value, bool):
        return value
    try:
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise ValueError(f"sampling setting {name}={value!r} is not a number") from None
    if kind is int:
        if number != int(number):
            raise ValueError(f"sampling setting {name}={value!r} is not a whole number")
        return int(number)
    return number


class _Caller:
    """What every LLM op shares: the engine, sampling settings (plain values or Parameters,
    which then become inputs of the op), a typed ``response_format`` and streaming."""

    def __init__(self, llm: Engine | str, params: dict[str, Any], response_role: str) -> None:
        if "tools" in params or "functions" in params:
            raise TypeError(f"{type(self).__name__} does not run tools and would drop the "
                            "model's tool calls; use tg.Agent(llm, tools=[fn, ...]) (or "
                            "tg.Chat(..., tools=...)), which runs them and traces each call")
        self.llm = _resolve(llm)
        self.response_format = check_response_format(params.pop("response_format", None))
        self.stream = bool(params.pop("stream", False))
        self.on_token: TokenCallback | None = params.pop("on_token", None)
        self.params = params
        self.response_role = response_role

    def _settings(self, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Variable]]:
        """Sampling values for one call, and the settings that are graph variables."""
        values: dict[str, Any] = {}
        inputs: dict[str, Variable] = {}
        for k, v in {**self.params, **params}.items():
            if k in _CALL_OPTIONS:
                continue
            if isinstance(v, Variable):
                inputs[k] = v
                v = setting_value(k, v.value)
            values[k] = v
        return values, inputs

    def _request(self, messages: list[Message], params: dict[str, Any],
                 tools: list[dict[str, Any]] | None = None) -> Request:
        values, _ = self._settings(params)
        fmt = check_response_format(params.get("response_format", self.response_format))
        on_token = params.get("on_token", self.on_token)
        return Request(messages=messages, params=values, purpose="forward",
                       response_format=fmt, tools=tools or None,
                       stream=bool(params.get("stream", self.stream)), on_token=on_token)

    def _send(self, request: Request, op: LLMOp) -> Variable:
        if request.response_format is None:
            return self._output(self.llm.complete(request), op)
        try:
            value, _ = complete_structured(self.llm, request, request.response_format)
        except StructuredOutputError as e:
            raise_structured(e, op)
        return record(StructuredVariable(value, role=self.response_role), op)

    async def _asend(self, request: Request, op: LLMOp) -> Variable:
        if request.response_format is None:
            return self._output(await self.llm.acomplete(request), op)
        try:
            value, _ = await acomplete_structured(self.llm, request, request.response_format)
        except StructuredOutputError as e:
            raise_structured(e, op)
        return record(StructuredVariable(value, role=self.response_role), op)

    def _output(self, c: Completion, op: LLMOp) -> Variable:
        out = Variable(c.text, role=self.response_role)
        return record(out, op)

    def parameters(self) -> list[Parameter]:
        found = [*vars(self).values(), *self.params.values()]
        return [v for v in found if isinstance(v, Parameter)]

    def _add_demos(self, inputs: dict[str, Variable], messages: list[Message]) -> None:
        demos = getattr(self, "demos", None)
        if demos is not None:
            inputs["demos"] = demos
            messages.extend(demo_messages(demos))  # type: ignore[arg-type]


def raise_structured(e: StructuredOutputError, op: LLMOp) -> NoReturn:
    """A reply that stayed invalid after its repair becomes an error node, as a failing
    function does: ``err.variable.backward()`` turns it into feedback on the prompt."""
    text = f"The model's reply was not valid structured output: {e}"
    err = Variable(text, role=f"error of {op.name}")
    err.error = str(e)
    err.is_objective = True
    record(err, op)
    raise ExecutionError(err, text) from None


class LLMCall(_Caller):
    """``LLMCall(llm, system=...)(question)``: one chat call; system prompt and input are nodes."""

    def __init__(
        self,
        llm: Engine | str,
        system: Variable | str | None = None,
        *,
        role: str = "response of the language model",
        name: str = "llm_call",
        demos: Demos | None = None,
        **params: Any,
    ) -> None:
        super().__init__(llm, params, role)
        self.system = as_variable(system, "system prompt") if system is not None else None
        self.demos = demos  # shown as user/assistant turns before the input
        self.name = name

    def _build(self, x: Any, params: dict[str, Any]) -> tuple[list[Message], dict[str, Variable]]:
        """A list of messages (``[{"role": ..., "content": ...}, ...]`` or ``(role, x)``
        pairs) is sent as a history, each message an input; anything else is one user
        message."""
        inputs: dict[str, Variable] = {}
        messages: list[Message] = []
        if self.system is not None:
            inputs["system"] = self.system
            messages.append({"role": "system", "content": self.system.text})
        self._add_demos(inputs, messages)
        if is_message_list(x):
            wire, history = normalize_messages(x)
            messages.extend(wire)
            inputs.update(history)
        else:
            inp = as_variable(x, "input to the language model")
            inputs["input"] = inp
            messages.append({"role": "user", "content": make_content(inp.value)})
        inputs.update(self._settings(params)[1])
        return messages, inputs

    def __call__(self, x: Any, **params: Any) -> Variable:
        """One call. ``params`` override the sampling settings for this call only;
        ``on_token=fn`` streams the reply to ``fn``."""
        messages, inputs = self._build(x, params)
        op = LLMOp(self.name, inputs, messages, self.llm.model)
        return self._send(self._request(messages, params), op)

    async def acall(self, x: Any, **params: Any) -> Variable:
        messages, inputs = self._build(x, params)
        op = LLMOp(self.name, inputs, messages, self.llm.model)
        return await self._asend(self._request(messages, params), op)


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
        demos: Demos | None = None,
        **params: Any,
    ) -> None:
        super().__init__(llm, params, role)
        self.template = as_variable(template, "prompt template")
        self.system = as_variable(system, "system prompt") if system is not None else None
        self.demos = demos
        self.name = name

    def _build(self, fields: dict[str, Any],
               params: dict[str, Any]) -> tuple[list[Message], dict[str, Variable]]:
        vars_ = {k: as_variable(v, k) for k, v in fields.items()}
        content = render_content(self.template.text, field_values(vars_))
        inputs: dict[str, Variable] = {}
        messages: list[Message] = []
        if self.system is not None:
            inputs["system"] = self.system
            messages.append({"role": "system", "content": self.system.text})
        self._add_demos(inputs, messages)
        inputs["template"] = self.template
        inputs.update(vars_)
        for k, v in self._settings(params)[1].items():
            inputs.setdefault(k, v)
        messages.append({"role": "user", "content": content})
        return messages, inputs

    def render_messages(self, **fields: Any) -> list[Message]:
        """The messages a call with ``fields`` sends now, without calling (for exports)."""
        return self._build(fields, {})[0]

    def __call__(self, params: dict[str, Any] | None = None, /, **fields: Any) -> Variable:
        """Render the template with ``fields`` (images stay images) and call the model;
        ``params`` (positional) override sampling settings for this call."""
        messages, inputs = self._build(fields, params or {})
        op = LLMOp(self.name, inputs, messages, self.llm.model)
        return self._send(self._request(messages, params or {}), op)

    async def acall(self, params: dict[str, Any] | None = None, /, **fields: Any) -> Variable:
        messages, inputs = self._build(fields, params or {})
        op = LLMOp(self.name, inputs, messages, self.llm.model)
        return await self._asend(self._request(messages, params or {}), op)
