"""Chat and agents: a list of messages, and a model calling tools in a loop, as graph nodes.

``Chat(llm, system=...)(messages)`` sends a whole history; every message is an input of
the call, so feedback on the reply reaches the turn (a Parameter, an earlier reply, a
user's message) that caused it. With ``tools=[...]`` the call becomes a loop:

1. the model is called with the history and the tools' specs -- one LLM node per turn,
   whose inputs are the system prompt, the messages, each tool's description and the
   earlier turns and tool results;
2. each tool call it asks for runs as a traced node ``result = tool(call=turn)``; its
   result (or the error it raised, reported as feedback) goes back to the model;
3. the loop ends at a reply without tool calls -- the final answer -- or after
   ``max_turns`` model calls, with an error node saying so.

Tool descriptions are Parameters, so an optimizer rewrites them with the system prompt.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from ..core.shorten import render, shorten
from ..core.variable import Feedback, Parameter, Variable
from ..llm.base import Completion, Engine, Message, Request, StructuredOutputError, ToolCall
from ..llm.structured import parse_as, repair_messages
from .base import Op, as_variable, record
from .llm import LLMOp, _Caller, raise_structured
from .messages import ChatMessages, normalize_messages
from .structured import StructuredVariable
from .tools import Tool, as_tools


class ToolOp(Op):
    """One tool call: the input is the model turn that asked for it."""

    kind = "tool"

    def __init__(self, tool: Tool, call: ToolCall, turn: Variable) -> None:
        super().__init__(tool.name, {"call": turn}, tool.description.text)
        self.call = call
        self.listing_note = f"arguments={shorten(call.arguments, 300)}"

    def context(self, out: Variable, limit: int = 600) -> dict[str, Any]:
        ctx = super().context(out, limit)
        ctx["arguments"] = shorten(self.call.arguments, limit)
        return ctx


def describe_calls(c: Completion) -> str:
    """A model turn that calls tools, as one line per call (what the trace listing shows)."""
    lines = [c.text.strip()] if c.text.strip() else []
    lines += [f"call {t.name}({t.arguments})" for t in c.tool_calls]
    return "\n".join(lines)


class _Run:
    """The state of one chat or tool loop; the sync and async drivers share it."""

    def __init__(self, chat: Chat, messages: ChatMessages, params: dict[str, Any]) -> None:
        self.chat = chat
        self.params = params
        wire, inputs = normalize_messages(messages)
        self.base: dict[str, Variable] = {}
        self.wire: list[Message] = []
        if chat.system is not None:
            self.base["system"] = chat.system
            self.wire.append({"role": "system", "content": chat.system.text})
        self.base.update(inputs)
        self.wire.extend(wire)
        for t in chat.tools:
            self.base[f"tool:{t.name}"] = t.description
        self.base.update(chat._settings(params)[1])
        self.history: dict[str, Variable] = {}
        self.turns = 0
        self.results = 0
        self.repaired = False
        self.request: Request | None = None
        self.pending: list[tuple[ToolCall, Variable]] = []
        self.output: Variable | None = None

    # -- model turns ---------------------------------------------------------------
    def next_request(self) -> Request | None:
        if self.output is not None:
            return None
        tools = [t.spec() for t in self.chat.tools]
        self.request = self.chat._request(list(self.wire), self.params, tools)
        return self.request

    def _op(self) -> LLMOp:
        assert self.request is not None
        desc = f"turn {self.turns} of {self.chat.name}" if self.chat.tools else ""
        return LLMOp(self.chat.name, {**self.base, **self.history}, self.request.messages,
                     self.chat.llm.model, desc, self.request.tools)

    def absorb(self, c: Completion) -> None:
        """Take one reply: tool calls to run, a final answer, or a repair to ask for."""
        self.turns += 1
        op = self._op()
        if c.tool_calls and self.chat.tools:
            turn = record(Variable(describe_calls(c), role="tool calls requested by the model"),
                          op)
            self.history[f"turn{self.turns}"] = turn
            self.wire.append({"role": "assistant", "content": c.text or None,
                              "tool_calls": [t.to_wire() for t in c.tool_calls]})
            if self.turns >= self.chat.max_turns:
                self.output = self._stopped(turn)
            else:
                self.pending = [(t, turn) for t in c.tool_calls]
            return
        fmt = self.request.response_format if self.request is not None else None
        if fmt is None:
            self.output = record(Variable(c.text, role=self.chat.response_role), op)
            return
        self._structured(c, fmt, op)

    def _structured(self, c: Completion, fmt: Any, op: LLMOp) -> None:
        try:
            value = c.parsed if isinstance(c.parsed, fmt) else parse_as(c.text, fmt)
        except ValueError as e:
            if self.repaired or self.request is None:
                raise_structured(StructuredOutputError(
                    f"model reply did not match {fmt.__name__} after one repair: {e}",
                    raw=c.text), op)
            self.repaired = True  # one repair, as for every structured reply
            self.wire = repair_messages(self.request, c.text, str(e))
            self.turns -= 1  # the repair is not a turn of the conversation
            return
        self.output = record(StructuredVariable(value, role=self.chat.response_role), op)

    def _stopped(self, turn: Variable) -> Variable:
        why = (f"The agent stopped after {self.turns} model turns (max_turns="
               f"{self.chat.max_turns}) without a final answer; it was still calling tools.")
        out = Variable(why, role=self.chat.response_role)
        out.error = why
        record(out, Op("max_turns", {"last_turn": turn}, "the tool loop's turn limit"))
        out.add_feedback(Feedback(why, source=out.name, context={"error": "max_turns"}))
        return out

    # -- tools -------------------------------------------------------------------------
    def _tool(self, name: str) -> Tool | None:
        return next((t for t in self.chat.tools if t.name == name), None)

    def _prepare(self, call: ToolCall) -> tuple[Tool | None, Callable[[], Any]]:
        tool = self._tool(call.name)
        if tool is None:
            names = ", ".join(t.name for t in self.chat.tools)
            raise LookupError(f"there is no tool named {call.name!r} (tools: {names})")
        kwargs = tool.bind(call.arguments)
        return tool, lambda: tool.fn(**kwargs)

    def run_tools(self) -> None:
        for call, turn in self._take():
            try:
                tool, fn = self._prepare(call)
                value = fn()
                if inspect.isawaitable(value):
                    value = asyncio.run(_awaited(value))
            except Exception as e:  # noqa: BLE001 - a failing tool is feedback, not a crash
                self._result(call, turn, None, e)
            else:
                self._result(call, turn, value, None, tool)

    async def arun_tools(self) -> None:
        for call, turn in self._take():
            try:
                tool, fn = self._prepare(call)
                value = await (fn() if tool is not None and tool.is_async
                               else asyncio.to_thread(fn))
                if inspect.isawaitable(value):
                    value = await value
            except Exception as e:  # noqa: BLE001 - a failing tool is feedback, not a crash
                self._result(call, turn, None, e)
            else:
                self._result(call, turn, value, None, tool)

    def _take(self) -> list[tuple[ToolCall, Variable]]:
        pending, self.pending = self.pending, []
        return pending

    def _result(self, call: ToolCall, turn: Variable, value: Any, error: Exception | None,
                tool: Tool | None = None) -> None:
        """Record a tool call's result node and send the result back to the model."""
        if isinstance(value, Variable):
            value = value.value
        tool = tool or self._tool(call.name) or Tool(_unknown, name=_safe_name(call.name))
        if error is None:
            out = Variable(value, role=f"result of the tool {tool.name}")
            text = render(value)
        else:
            message = f"{type(error).__name__}: {error}"
            text = f"error: {message}"
            out = Variable(text, role=f"error raised by the tool {tool.name}")
            out.error = message
        record(out, ToolOp(tool, call, turn))
        if error is not None:
            out.add_feedback(Feedback(
                f"The call {call.name}({shorten(call.arguments, 300)}) failed with {message}. "
                "The model chose the tool and wrote these arguments from the tool's "
                "description and the conversation.", source=out.name,
                context={"error": message, "tool": call.name}))
        self.results += 1
        self.history[f"{tool.name}_result{self.results}"] = out
        self.wire.append({"role": "tool", "tool_call_id": call.id, "content": text})


async def _awaited(value: Any) -> Any:
    return await value


def _unknown() -> None:
    """A tool the model named that does not exist."""


def _safe_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:64]
    return cleaned or "unknown_tool"


class Chat(_Caller):
    """``Chat(llm, system=...)(messages)``: one reply to a whole message history.

    With ``tools=[fn, ...]`` (functions or :class:`Tool`) the model may call them; the loop
    runs at most ``max_turns`` model calls. ``response_format=Model`` types the final reply
    (one repair on invalid output); ``on_token=fn`` streams every turn's text to ``fn``;
    sampling settings (``temperature=tg.Parameter(0.7)``) may be Parameters.
    """

    def __init__(
        self,
        llm: Engine | str,
        system: Variable | str | None = None,
        *,
        tools: Iterable[Tool | Callable[..., Any]] = (),
        max_turns: int = 8,
        role: str = "reply of the chat model",
        name: str = "chat",
        **params: Any,
    ) -> None:
        super().__init__(llm, params, role)
        if isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1:
            raise ValueError(f"max_turns must be a whole number >= 1, got {max_turns!r}")
        self.system = as_variable(system, "system prompt") if system is not None else None
        self.tools = as_tools(tools)
        self.max_turns = max_turns
        self.name = name

    def parameters(self) -> list[Parameter]:
        found = super().parameters()
        return found + [p for t in self.tools for p in t.parameters() if p not in found]

    def __call__(self, messages: ChatMessages, **params: Any) -> Variable:
        run = _Run(self, messages, params)
        while (request := run.next_request()) is not None:
            run.absorb(self.llm.complete(request))
            run.run_tools()
        assert run.output is not None
        return run.output

    async def acall(self, messages: ChatMessages, **params: Any) -> Variable:
        run = _Run(self, messages, params)
        while (request := run.next_request()) is not None:
            run.absorb(await self.llm.acomplete(request))
            await run.arun_tools()
        assert run.output is not None
        return run.output


class Agent(Chat):
    """A :class:`Chat` that calls tools: ``Agent(llm, tools=[search, add], system=...)``."""

    def __init__(
        self,
        llm: Engine | str,
        system: Variable | str | None = None,
        *,
        tools: Iterable[Tool | Callable[..., Any]],
        max_turns: int = 8,
        role: str = "final answer of the agent",
        name: str = "agent",
        **params: Any,
    ) -> None:
        super().__init__(llm, system, tools=tools, max_turns=max_turns, role=role, name=name,
                         **params)
        if not self.tools:
            raise ValueError("an Agent needs at least one tool; use tg.Chat for a plain chat")


__all__ = ["Agent", "Chat", "ChatMessages", "ToolOp", "describe_calls", "normalize_messages"]
