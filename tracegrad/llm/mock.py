"""MockLLM: a scripted, inspectable engine for testing pipelines offline.

Public API: users test their own pipelines with it. It records every request, can
simulate latency, and reports the peak number of calls in flight, so tests can assert
call counts and concurrency rather than trusting them.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .base import (
    BaseEngine,
    Completion,
    Request,
    ToolCall,
    Usage,
    content_to_text,
    estimate_request_tokens,
    estimate_tokens,
)
from .structured import parse_as

Reply = str | dict[str, Any] | Completion | Exception | Callable[[Request], Any]

_PIECES = re.compile(r"\s*\S+|\s+")


def tool_reply(*calls: tuple[str, Any], text: str = "") -> dict[str, Any]:
    """A scripted reply in which the model calls tools: ``tool_reply(("add", {"a": 1}))``.

    Both :class:`MockLLM` and :class:`~tracegrad.testing.FakeOpenAIServer` accept it. Each
    call is ``(name, arguments)``; arguments that are not a string are written as JSON
    (a string is sent as it is, so a test can script broken JSON).
    """
    out = []
    for i, (name, args) in enumerate(calls, 1):
        arguments = args if isinstance(args, str) else json.dumps(args)
        out.append({"id": f"call_{i}", "name": name, "arguments": arguments})
    return {"content": text, "tool_calls": out}


def stream_pieces(text: str) -> list[str]:
    """``text`` cut into word-sized pieces, the way a streaming server sends it."""
    return _PIECES.findall(text)


def scripted_tool_calls(reply: dict[str, Any]) -> list[ToolCall]:
    calls = []
    for i, c in enumerate(reply.get("tool_calls") or [], 1):
        args = c.get("arguments", "{}")
        calls.append(ToolCall(str(c.get("id") or f"call_{i}"), str(c["name"]),
                              args if isinstance(args, str) else json.dumps(args)))
    return calls


class InFlight:
    """A thread-safe count of calls in progress and its peak, used as ``with counter:``.

    Tests assert concurrency (``1 < peak <= limit``) instead of trusting a limiter; the
    mock engine and the fake HTTP server both count the same way through this one class.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def __enter__(self) -> InFlight:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1

    def reset_peak(self) -> None:
        with self._lock:
            self.peak = 0


def request_text(request: Request) -> str:
    """All message text of a request, joined: what pattern rules match against."""
    return "\n".join(content_to_text(m.get("content")) for m in request.messages)


class MockLLM(BaseEngine):
    """A scripted engine.

    ``replies`` may be:

    * a list of replies, consumed in order (then ``default`` is used),
    * a callable ``f(request) -> str | Completion``,
    * a mapping ``{regex: reply}``, matched against the request's text in order;
      a reply in a mapping may itself be a callable.

    A reply may be text, a :class:`Completion`, or :func:`tool_reply` (the model calls
    tools). A streaming request gets its text in word-sized pieces through ``on_token``.

    :meth:`on` and :meth:`add_replies` add rules and queued replies later; rules are
    tried first, then the queue, then ``default``.

    A reply that is an exception instance is raised, for testing error paths.
    """

    def __init__(
        self,
        replies: Iterable[Reply] | Callable[[Request], Any] | Mapping[str, Reply] | None = None,
        *,
        default: Reply | None = "mock reply",
        latency: float = 0.0,
        model: str = "mock",
        max_concurrency: int | None = None,
    ) -> None:
        self.model = model
        self.latency = latency
        self.default = default
        self.max_concurrency = max_concurrency
        self._rules: list[tuple[re.Pattern[str], Reply]] = []
        self._queue: list[Reply] = []
        self._fn: Callable[[Request], Any] | None = None
        if callable(replies) and not isinstance(replies, Mapping):
            self._fn = replies
        elif isinstance(replies, Mapping):
            self._rules = [(re.compile(k, re.S), v) for k, v in replies.items()]
        elif replies is not None:
            self._queue = list(replies)
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._counter = InFlight()

    # -- inspection -------------------------------------------------------
    @property
    def calls(self) -> int:
        return len(self.requests)

    @property
    def in_flight(self) -> int:
        return self._counter.now

    @property
    def max_in_flight(self) -> int:
        """The most calls that were in progress at once (since the last :meth:`reset`)."""
        return self._counter.peak

    def calls_for(self, purpose: str) -> int:
        return sum(1 for r in self.requests if r.purpose == purpose)

    def texts(self, purpose: str | None = None) -> list[str]:
        return [request_text(r) for r in self.requests if purpose is None or r.purpose == purpose]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
        self._counter.reset_peak()

    # -- scripting after construction (the pytest ``mock_llm`` fixture is built empty) ---
    def add_replies(self, *replies: Reply) -> MockLLM:
        """Queue replies, used in order once no rule matches."""
        with self._lock:
            self._queue.extend(replies)
        return self

    def on(self, pattern: str, reply: Reply) -> MockLLM:
        """Answer requests whose text matches ``pattern`` (a regex) with ``reply``."""
        with self._lock:
            self._rules.append((re.compile(pattern, re.S), reply))
        return self

    # -- engine -------------------------------------------------------------
    def _pick(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._fn is not None:
                return self._fn
            if self._rules:
                text = request_text(request)
                for pat, reply in self._rules:
                    if pat.search(text):
                        return reply
            if self._queue:
                return self._queue.pop(0)
        if self.default is None:
            raise AssertionError(
                f"MockLLM has no reply for request:\n{request_text(request)[:500]}"
            )
        return self.default

    def _finish(self, request: Request, reply: Reply) -> Completion:
        if callable(reply) and not isinstance(reply, Exception):
            reply = reply(request)
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, Completion):
            request.emit(reply.text)
            return reply
        calls: list[ToolCall] = []
        if isinstance(reply, dict):
            calls = scripted_tool_calls(reply)
            reply = reply.get("content") or ""
        text = str(reply)
        for piece in stream_pieces(text) if request.streaming else ():
            request.emit(piece)
        parsed = None
        if request.response_format is not None:
            try:
                parsed = parse_as(text, request.response_format)
            except ValueError:
                parsed = None
        return Completion(
            text=text,
            model=self.model,
            usage=Usage(estimate_request_tokens(request),
                        estimate_tokens(text + "".join(c.name + c.arguments for c in calls)),
                        estimated=True),
            parsed=parsed,
            finish_reason="tool_calls" if calls else "stop",
            tool_calls=calls,
        )

    def complete(self, request: Request) -> Completion:
        with self._counter:
            t0 = time.perf_counter()
            reply = self._pick(request)
            if self.latency:
                time.sleep(self.latency)
            c = self._finish(request, reply)
            c.latency_s = time.perf_counter() - t0
            return c

    async def acomplete(self, request: Request) -> Completion:
        with self._counter:
            t0 = time.perf_counter()
            reply = self._pick(request)
            if self.latency:
                await asyncio.sleep(self.latency)
            c = self._finish(request, reply)
            c.latency_s = time.perf_counter() - t0
            return c


