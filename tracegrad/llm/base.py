"""The engine protocol: the one door every LLM call in tracegrad goes through.

Ops, propagators, optimizers and judges build a :class:`Request` and hand it to an
:class:`Engine`. Caching, rate limits, retries, metering and budgets are wrappers that
take an engine and return an engine (see :class:`EngineWrapper`), so each concern stays
in its own small module and composes in any order -- the same idea as httpx transports.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from ..core.values import Image  # re-exported: values flowing through the graph live in core

Purpose = Literal["forward", "backward", "optimizer", "judge", "eval", "other"]
PURPOSES: tuple[str, ...] = ("forward", "backward", "optimizer", "judge", "eval", "other")

Message = dict[str, Any]
"""An OpenAI-style chat message: ``{"role": ..., "content": str | list[part]}``."""


class LLMError(Exception):
    """Base class of every error the LLM layer raises on purpose."""


class StructuredOutputError(LLMError):
    """The model did not return a value matching the requested schema, even after a repair."""

    def __init__(self, message: str, *, raw: str = "") -> None:
        super().__init__(message)
        self.raw = raw


class Deferred(Exception):
    """A call left for a provider batch (see :mod:`tracegrad.llm.batch`): not an error.

    Raised only while a batch scope collects requests; the example is run again once the
    batch has answered. Deliberately not an LLMError, so nothing retries or repairs it.
    """

    def __init__(self, key: str) -> None:
        super().__init__(f"request {key[:12]} is waiting for a provider batch")
        self.key = key
        self.scope: Any = None  # the BatchScope that deferred it


class ConfigurationError(LLMError):
    """The engine cannot be used as configured (missing key, unknown provider...)."""


class RetryableError(LLMError):
    """A failure worth retrying: rate limit, server error, timeout, dropped connection.

    ``status`` is the HTTP status when there was a response; ``retry_after`` is how long
    the server asked us to wait, in seconds, when it said so. ``attempts`` is filled in
    by the retrying wrapper once it gives up.
    """

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.attempts = 1

    def gave_up(self, attempts: int) -> RetryableError:
        """A copy of this error (same class) whose message says retries are exhausted."""
        import copy

        err = copy.copy(self)
        last = f"status {self.status}" if self.status is not None else "no HTTP response"
        err.args = (f"{self.args[0]} -- gave up after {attempts} attempts (last: {last})",)
        err.attempts = attempts
        return err


class LLMTimeout(RetryableError):
    """No complete reply within the engine's timeout: the server stalled or trickled bytes."""


class ConnectionFailed(RetryableError):
    """The server could not be reached at all (refused, DNS, reset before replying)."""

    def __init__(
        self,
        message: str,
        *,
        url: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, retry_after=retry_after)
        self.url = url


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.estimated or other.estimated,
        )


@dataclass(frozen=True)
class ToolCall:
    """One function call the model asked for: ``arguments`` is the JSON text it wrote
    (kept as text: a model may write invalid JSON, which the tool loop reports back)."""

    id: str
    name: str
    arguments: str = "{}"

    def to_wire(self) -> dict[str, Any]:
        """The call as it appears in an assistant message of the Chat Completions API."""
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> ToolCall:
        fn = d.get("function") or {}
        return cls(str(d.get("id") or ""), str(fn.get("name") or ""),
                   str(fn.get("arguments") or "{}"))


TokenCallback = Callable[[str], Any]
"""Receives each piece of reply text as it arrives from a streaming server."""


@dataclass
class Request:
    """Everything that determines an LLM reply, plus bookkeeping that does not.

    ``params`` are sampling parameters passed through to the server unchanged.
    ``tools`` are function specs in the Chat Completions ``tools`` format; they decide the
    reply, so they are part of the cache key.
    ``sample_id`` lets a caller deliberately re-sample: it is part of the cache key.
    ``purpose`` and ``cache`` affect metering and caching, never the reply; neither do
    ``stream`` and ``on_token`` (stream the reply, handing each piece to ``on_token``).
    """

    messages: list[Message]
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    response_format: type[BaseModel] | None = None
    purpose: str = "forward"
    sample_id: str | None = None
    cache: bool = True
    tools: list[dict[str, Any]] | None = None
    stream: bool = False
    on_token: TokenCallback | None = field(default=None, compare=False, repr=False)

    @property
    def streaming(self) -> bool:
        return self.stream or self.on_token is not None

    def emit(self, piece: str) -> None:
        """Hand ``piece`` of the reply to the token callback, if there is one."""
        if piece and self.on_token is not None:
            self.on_token(piece)

    def with_messages(self, messages: list[Message]) -> Request:
        return replace(self, messages=messages)


@dataclass
class Completion:
    """One reply. ``completion_limit`` is the reply-token limit the engine sent (None when
    it sent none); ``finish_reason`` is the server's ("stop", "length", ...)."""

    text: str
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    parsed: Any = None
    cached: bool = False
    finish_reason: str | None = None
    latency_s: float = 0.0
    completion_limit: int | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    batch: bool = False  # answered through a provider's Batch API: billed at batch prices

    @property
    def problem(self) -> str | None:
        """Why this reply cannot be trusted as a whole answer, or None.

        "length": cut at the token limit; "content_filter": cut by the server's filter;
        "empty": no text at all (or only whitespace) and no parsed value. A caller that
        needs the whole reply (an optimizer's rewrite) should treat these as failures.
        """
        if self.finish_reason in ("length", "content_filter"):
            return self.finish_reason
        if not self.text.strip() and self.parsed is None and not self.tool_calls:
            return "empty"
        return None


@runtime_checkable
class Engine(Protocol):
    """What every engine and every wrapper provides: a sync and an async twin."""

    model: str

    def complete(self, request: Request) -> Completion: ...

    async def acomplete(self, request: Request) -> Completion: ...


class BaseEngine:
    """Convenience base: implement one of ``complete``/``acomplete``; get both plus ``chat``."""

    model: str = "unknown"
    max_concurrency: int | None = None

    def complete(self, request: Request) -> Completion:
        return asyncio.run(self.acomplete(request))

    async def acomplete(self, request: Request) -> Completion:
        return await asyncio.to_thread(self.complete, request)

    def chat(
        self,
        messages: str | Sequence[Message],
        *,
        system: str | None = None,
        response_format: type[BaseModel] | None = None,
        purpose: str = "forward",
        cache: bool = True,
        sample_id: str | None = None,
        **params: Any,
    ) -> Completion:
        return self.complete(
            make_request(
                messages,
                system=system,
                response_format=response_format,
                purpose=purpose,
                cache=cache,
                sample_id=sample_id,
                **params,
            )
        )

    async def achat(
        self,
        messages: str | Sequence[Message],
        *,
        system: str | None = None,
        response_format: type[BaseModel] | None = None,
        purpose: str = "forward",
        cache: bool = True,
        sample_id: str | None = None,
        **params: Any,
    ) -> Completion:
        return await self.acomplete(
            make_request(
                messages,
                system=system,
                response_format=response_format,
                purpose=purpose,
                cache=cache,
                sample_id=sample_id,
                **params,
            )
        )


class EngineWrapper(BaseEngine):
    """Base of every wrapper: forwards to ``inner`` and exposes its attributes."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner

    @property
    def model(self) -> str:  # type: ignore[override]
        return self.inner.model

    @property
    def max_concurrency(self) -> int | None:  # type: ignore[override]
        return getattr(self.inner, "max_concurrency", None)

    def complete(self, request: Request) -> Completion:
        return self.inner.complete(request)

    async def acomplete(self, request: Request) -> Completion:
        return await self.inner.acomplete(request)

    def find(self, kind: type) -> Any:
        """The first engine of ``kind`` in this wrapper chain, or None."""
        e: Any = self
        while e is not None:
            if isinstance(e, kind):
                return e
            e = getattr(e, "inner", None)
        return None


def find_engine(engine: Any, kind: type) -> Any:
    """Walk a wrapper chain and return the first engine of ``kind`` (or None)."""
    e = engine
    while e is not None:
        if isinstance(e, kind):
            return e
        e = getattr(e, "inner", None)
    return None


def describe_image_url(url: str) -> str:
    """A placeholder for an image part, saying what it is without its bytes."""
    head = url[:64]
    if head.startswith("data:") and ";base64," in url:
        mime = head[5:].split(";", 1)[0] or "image"
        size = (len(url) - url.index(",") - 1) * 3 // 4
        return f"<image {mime}, about {size} bytes>"
    return "<image>"


def content_to_text(content: Any) -> str:
    """Flatten message content (string or parts) to text; images become a short marker."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    out = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text":
            out.append(str(part.get("text", "")))
        elif isinstance(part, dict) and part.get("type") == "image_url":
            out.append("<image>")
        else:
            out.append(str(part))
    return "\n".join(out)


def make_content(value: Any) -> str | list[dict[str, Any]]:
    """Message content for a value: text, or parts when it holds images."""
    if isinstance(value, Image):
        return [{"type": "image_url", "image_url": {"url": value.data_url()}}]
    if isinstance(value, list | tuple) and any(isinstance(v, Image) for v in value):
        parts: list[dict[str, Any]] = []
        for v in value:
            if isinstance(v, Image):
                parts.append({"type": "image_url", "image_url": {"url": v.data_url()}})
            else:
                parts.append({"type": "text", "text": str(v)})
        return parts
    return value if isinstance(value, str) else str(value)


def make_request(
    messages: str | Sequence[Message],
    *,
    system: str | None = None,
    response_format: type[BaseModel] | None = None,
    purpose: str = "forward",
    cache: bool = True,
    sample_id: str | None = None,
    **params: Any,
) -> Request:
    msgs: list[Message] = []
    if system is not None:
        msgs.append({"role": "system", "content": system})
    if isinstance(messages, str):
        msgs.append({"role": "user", "content": messages})
    else:
        msgs.extend(dict(m) for m in messages)
    return Request(
        messages=msgs,
        params=params,
        response_format=response_format,
        purpose=purpose,
        cache=cache,
        sample_id=sample_id,
    )


def estimate_tokens(text: str) -> int:
    """Rough token count (about 4 characters per token) used when a server reports no usage."""
    return max(1, (len(text) + 3) // 4) if text else 0


def message_text(message: Mapping[str, Any]) -> str:
    """A message's text as billed: its content plus any tool calls it carries."""
    text = content_to_text(message.get("content"))
    calls = message.get("tool_calls")
    if calls:
        text += json.dumps(calls, ensure_ascii=False, default=str)
    return text


def estimate_request_tokens(request: Request) -> int:
    tools = estimate_tokens(json.dumps(request.tools, default=str)) if request.tools else 0
    return tools + sum(estimate_tokens(message_text(m)) + 4 for m in request.messages)


# -- completion limits -------------------------------------------------------------------
# Every call carries a reply-token limit, and the meter reserves exactly that limit: a
# server told the limit cannot bill more than was reserved, so a budget holds. These are
# the limits used when neither the request nor the engine sets max_tokens.

DEFAULT_COMPLETION_LIMITS: dict[str, int] = {
    "forward": 1024,
    "eval": 1024,
    "backward": 1024,  # feedback on one or a few examples
    "optimizer": 2048,  # reasoning plus a whole rewritten prompt
    "judge": 512,  # a score and a short explanation
    "other": 1024,
}
REASONING_LIMIT_FACTOR = 4
"""Reasoning models count their hidden thinking as completion tokens: defaults x this."""

_REASONING = re.compile(r"^(o\d|gpt-5)")
_LIMIT_NAMES = ("max_completion_tokens", "max_tokens")


def is_reasoning_model(model: str | None) -> bool:
    """o1/o3/o4/gpt-5 families (also as ``openai/o3``): the one place that decides it."""
    name = (model or "").strip().lower().rsplit("/", 1)[-1]
    return bool(_REASONING.match(name))


def completion_limit_param(model: str | None) -> str:
    """The request field that carries the limit: reasoning models reject ``max_tokens``."""
    return "max_completion_tokens" if is_reasoning_model(model) else "max_tokens"


def positive_limit(name: str, value: Any) -> int:
    """``value`` as a reply-token limit, or ConfigurationError (it would reach the server)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) \
            or int(value) < 1:
        raise ConfigurationError(f"{name} must be a whole number of tokens >= 1, got {value!r}")
    return int(value)


def explicit_completion_limit(params: Mapping[str, Any]) -> int | None:
    """The limit ``params`` set themselves (``max_completion_tokens`` or ``max_tokens``)."""
    for name in _LIMIT_NAMES:
        if params.get(name) is not None:
            return positive_limit(name, params[name])
    return None


def check_completion_limits(limits: Mapping[str, Any] | None) -> dict[str, int]:
    """Per-purpose limits given by a user, validated: ``{"optimizer": 4096}``."""
    out: dict[str, int] = {}
    for purpose, value in (limits or {}).items():
        if purpose not in DEFAULT_COMPLETION_LIMITS:
            raise ConfigurationError(
                f"completion_limits names unknown purpose {purpose!r}; use one of "
                + ", ".join(DEFAULT_COMPLETION_LIMITS)
            )
        out[purpose] = positive_limit(f"completion_limits[{purpose!r}]", value)
    return out


def completion_limit(
    request: Request,
    model: str | None,
    engine_params: Mapping[str, Any] | None = None,
    limits: Mapping[str, int] | None = None,
) -> int:
    """The reply-token limit of ``request``: the request's own max_tokens, else the
    engine's, else ``limits[purpose]``, else the default for its purpose (scaled up for
    reasoning models, which spend completion tokens thinking)."""
    for params in (request.params, engine_params or {}):
        explicit = explicit_completion_limit(params)
        if explicit is not None:
            return explicit
    purpose = request.purpose if request.purpose in DEFAULT_COMPLETION_LIMITS else "other"
    if limits and purpose in limits:
        return limits[purpose]
    factor = REASONING_LIMIT_FACTOR if is_reasoning_model(model) else 1
    return DEFAULT_COMPLETION_LIMITS[purpose] * factor


def completion_limit_of(engine: Any, request: Request) -> int | None:
    """The limit the engine at the bottom of a wrapper chain will send for ``request``,
    or None when that engine sends none of its own (a mock, a custom engine)."""
    e = engine
    while e is not None:
        fn = getattr(type(e), "completion_limit", None)
        if callable(fn):
            return int(e.completion_limit(request))
        e = getattr(e, "inner", None)
    return None
