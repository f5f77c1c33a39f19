"""OpenAIEngine: Chat Completions on OpenAI or any OpenAI-compatible server.

This is the only module that imports ``openai``. Everything the SDK can raise is turned
into one of our own errors here, so the wrappers above (limits, cache, meter) and the ops
never depend on SDK exception classes -- and so that no message can carry the API key.
The SDK's own retries are off by default: :class:`~tracegrad.llm.limits.Limits` retries,
with one budget and one backoff policy for the whole run.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import threading
import time
import warnings
import weakref
from typing import Any
from urllib.parse import urlsplit

import httpx2
import openai
from openai.resources.chat.completions import Completions
from openai.types.chat import ChatCompletion
from pydantic import ValidationError

from ..redaction import remember
from .base import (
    BaseEngine,
    Completion,
    ConfigurationError,
    ConnectionFailed,
    LLMError,
    LLMTimeout,
    Request,
    RetryableError,
    ToolCall,
    Usage,
    check_completion_limits,
    completion_limit,
    completion_limit_param,
    estimate_request_tokens,
    estimate_tokens,
    positive_limit,
)
from .calllog import redact
from .deadline import deadline, install_deadline
from .http1 import Http1Transport
from .limits import DEFAULT_MAX_CONCURRENCY
from .loop import shared_loop
from .structured import append_schema, parse_as, schema_name
from .transport import env_proxies, one_pool
from .wire import (
    LIMIT_NAMES,
    checked_timeout,
    credentials,
    display_url,
    retry_after,
    sent_limit,
    wire_body,
)

__all__ = ["OpenAIEngine"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_NO_KEY = "tracegrad-no-key"  # servers without auth still need some bearer value
_RETRYABLE_STATUS = {408, 409, 425, 429}


def _create_params() -> frozenset[str]:
    skip = {"self", "messages", "model", "extra_headers", "extra_query", "extra_body", "timeout"}
    return frozenset(p for p in inspect.signature(Completions.create).parameters if p not in skip)


_SDK_PARAMS = _create_params()


def _request_of(e: Exception) -> Any:
    """The request an httpx error is about (httpx raises RuntimeError when it has none)."""
    try:
        return e.request  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        return None


class _ChatPoster:
    """Posts a non-streaming chat request through the SDK client's own HTTP client, with
    the headers the SDK would send (its defaults, yours and the bearer key), and reads the
    reply as the SDK would; errors become the SDK's own exceptions.

    The SDK's request machinery (options, header merging, its retry loop -- off here, our
    Limits retry) and its reply model construction cost about 1 ms of CPU per call on the
    one loop that sends every call; this path takes about a third less wall time per call
    when the client's CPU is the bottleneck (2,000 calls at concurrency 32 on a local
    server: 2.2 against 3.3-3.8 ms per call, server included).
    Used only when the client is a plain key client (:meth:`usable`); otherwise, and for
    streams, requests go through the SDK's ``create``.
    """

    def __init__(self, client: openai.AsyncOpenAI, http: Any) -> None:
        self.client, self.http = client, http
        self.url = str(client.base_url).rstrip("/") + "/chat/completions"
        headers = {**client.default_headers, **client.auth_headers}
        self.headers = {k: v for k, v in headers.items() if isinstance(v, str)}
        self.headers["Content-Type"] = "application/json"
        # straight to tracegrad's own transport when the HTTP client adds nothing a plain
        # POST needs (no hooks, auth, proxies): httpx's client layer (URL and header
        # merging, cookies, auth and redirect loops) was a third of the loop's CPU per
        # call (0.62 -> 0.40-0.46 ms measured at concurrency 32)
        self.direct = _direct_transport(http)
        merged = httpx2.Headers(getattr(http, "headers", None) or {})
        merged.update(self.headers)
        self._direct_headers, self._direct_url = merged, httpx2.URL(self.url)

    @staticmethod
    def usable(client: Any) -> bool:
        return (hasattr(client, "_make_status_error_from_response")
                and bool(getattr(client, "auth_headers", None)) and not client.default_query)

    async def post(self, kwargs: dict[str, Any]) -> ChatCompletion:
        body = json.dumps(wire_body(kwargs)).encode()
        try:
            resp = await self._send(body, kwargs.get("timeout"))
        except httpx2.TimeoutException as e:
            raise openai.APITimeoutError(request=e.request) from e
        except httpx2.HTTPError as e:
            raise openai.APIConnectionError(request=_request_of(e)) from e
        if resp.status_code >= 400:
            raise self.client._make_status_error_from_response(resp)
        try:
            return ChatCompletion.model_validate_json(resp.content)
        except ValidationError:  # a server that leaves out fields: the SDK's lenient reading
            return ChatCompletion.construct(**resp.json())

    async def _send(self, body: bytes, timeout: Any) -> httpx2.Response:
        if self.direct is None:
            return await self.http.post(self.url, content=body, headers=self.headers,
                                        timeout=timeout)
        req = httpx2.Request("POST", self._direct_url, headers=self._direct_headers,
                             content=body, extensions={"timeout": httpx2.Timeout(timeout).as_dict()})
        resp = await self.direct.handle_async_request(req)
        resp.request = req
        try:
            await resp.aread()
        except BaseException:
            await resp.aclose()
            raise
        if resp.is_redirect:  # the client follows redirects; let it
            return await self.http.post(self.url, content=body, headers=self.headers,
                                        timeout=timeout)
        return resp


def _direct_transport(http: Any) -> Http1Transport | None:
    transport = getattr(http, "_transport", None)
    hooks = getattr(http, "event_hooks", None) or {}
    if (not isinstance(transport, Http1Transport) or getattr(http, "_mounts", True)
            or any(hooks.values()) or getattr(http, "auth", None) is not None):
        return None
    return transport


def _shared_http(max_concurrency: int) -> Any:
    """The async HTTP client of an engine's shared client: the SDK's defaults (headers,
    timeouts, decoding) over :class:`~.http1.Http1Transport`, which keeps as many idle
    connections as calls may be in flight."""
    if env_proxies():  # a proxy from the environment needs httpx's own transport
        return openai.DefaultAsyncHttpxClient(limits=one_pool(max_concurrency))
    return openai.DefaultAsyncHttpxClient(transport=Http1Transport(
        max_idle=max(100, int(max_concurrency))))


def _close_later(loop: Any, client: Any) -> None:
    """Close a dropped engine's shared client on the shared loop (its sockets live there)."""
    if not shared_loop().accepts(loop):  # closing at exit: the process ends its sockets
        return
    coro = client.close()
    try:
        asyncio.run_coroutine_threadsafe(coro, loop)
    except RuntimeError:  # the loop stopped meanwhile (interpreter exit)
        coro.close()


class _OwnedHttpClient(openai.DefaultHttpxClient):  # type: ignore[misc, valid-type]
    """The SDK's default sync HTTP client, closed when dropped (as the SDK's own is)."""

    def __del__(self) -> None:
        try:
            if not self.is_closed:
                self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _estimated_usage(request: Request, text: str, calls: list[ToolCall]) -> Usage:
    out = text + "".join(c.name + c.arguments for c in calls)
    return Usage(estimate_request_tokens(request), estimate_tokens(out), estimated=True)


def _parsed(request: Request, text: str) -> Any:
    if request.response_format is None:
        return None
    try:
        return parse_as(text, request.response_format)
    except ValueError:
        return None  # complete_structured decides whether to repair


class _Streamed:
    """A streamed reply put together chunk by chunk: text pieces go to the request's
    callback as they arrive; tool-call fragments are joined by their index."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.pieces: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.usage: Usage | None = None
        self.model = ""
        self.finish_reason: str | None = None

    def add(self, chunk: Any) -> None:
        self.model = getattr(chunk, "model", None) or self.model
        if getattr(chunk, "usage", None) is not None:
            u = chunk.usage
            self.usage = Usage(u.prompt_tokens or 0, u.completion_tokens or 0)
        for choice in getattr(chunk, "choices", None) or []:
            delta = choice.delta
            if delta is not None and delta.content:
                self.pieces.append(delta.content)
                self.request.emit(delta.content)
            for tc in (delta.tool_calls if delta is not None else None) or []:
                slot = self.calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] = tc.id or slot["id"]
                if tc.function is not None:
                    slot["name"] += tc.function.name or ""
                    slot["arguments"] += tc.function.arguments or ""
            self.finish_reason = choice.finish_reason or self.finish_reason

    def completion(self, kwargs: dict[str, Any], t0: float) -> Completion:
        text = "".join(self.pieces)
        calls = [ToolCall(c["id"] or f"call_{i}", c["name"], c["arguments"] or "{}")
                 for i, c in sorted(self.calls.items())]
        return Completion(
            text=text,
            model=self.model or kwargs["model"],
            usage=self.usage or _estimated_usage(self.request, text, calls),
            parsed=_parsed(self.request, text),
            finish_reason=self.finish_reason,
            latency_s=time.perf_counter() - t0,
            completion_limit=sent_limit(kwargs),
            tool_calls=calls,
        )


class _SchemaRejected(Exception):
    def __init__(self, error: LLMError) -> None:
        self.error = error


class OpenAIEngine(BaseEngine):
    """Chat Completions through the official ``openai`` client.

    ``base_url`` (or ``$OPENAI_BASE_URL``) points at any OpenAI-compatible server; such a
    server may need no key. ``temperature``, ``max_tokens`` and any other keyword become
    default sampling parameters; a request's ``params`` override them. Parameters the SDK
    does not know are still sent (as extra body fields), never dropped.

    Every call carries a reply-token limit (``max_tokens``, or ``max_completion_tokens``
    for reasoning models): a request's own, else ``max_tokens`` here, else
    ``completion_limits[purpose]``, else :data:`~tracegrad.llm.base.DEFAULT_COMPLETION_LIMITS`.
    A meter reserves exactly that limit (:meth:`completion_limit`), so a server cannot
    bill more than a budget allowed for.

    ``timeout`` bounds each attempt as a whole -- connecting, sending, waiting and
    reading -- not only each wait for a byte, so a server that trickles its reply cannot
    hold a call longer than ``timeout`` (times the SDK's own attempts, ``max_retries + 1``).
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float = 60.0,
        max_retries: int = 0,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        organization: str | None = None,
        default_headers: dict[str, str] | None = None,
        http_client: Any = None,
        async_http_client: Any = None,
        completion_limits: dict[str, int] | None = None,
        **params: Any,
    ) -> None:
        if not model:
            raise ConfigurationError("OpenAIEngine needs a model name, e.g. 'gpt-4o-mini'")
        self.model = model
        key = api_key or os.environ.get("OPENAI_API_KEY") or None
        url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        if not key and (url is None or urlsplit(url).hostname == "api.openai.com"):
            raise ConfigurationError(
                "No OpenAI API key found. Set the OPENAI_API_KEY environment variable, or pass "
                "base_url=... (CLI: --base-url URL) to use an OpenAI-compatible server such as "
                "a local one at http://localhost:8000/v1 that needs no key."
            )
        self._api_key = key
        self.base_url = url
        self._secrets = credentials(key, url, default_headers)
        remember(*self._secrets)
        self.timeout = checked_timeout(timeout)
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.params: dict[str, Any] = dict(params)
        if temperature is not None:
            self.params["temperature"] = temperature
        if max_tokens is not None:
            self.params["max_tokens"] = positive_limit("max_tokens", max_tokens)
        for name in LIMIT_NAMES:
            if self.params.get(name) is not None:
                positive_limit(name, self.params[name])
        self.completion_limits = check_completion_limits(completion_limits)
        self.json_schema_supported: bool | None = None  # None: not yet known
        self._client_kw: dict[str, Any] = {
            "api_key": key or _NO_KEY,
            "base_url": url,
            "timeout": timeout,
            "max_retries": max_retries,
            "organization": organization,
            "default_headers": default_headers,
        }
        self._http_client = http_client
        self._async_http_client = async_http_client
        self._lock = threading.Lock()
        self._client: openai.OpenAI | None = None
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, Any]]
        self._aclients = weakref.WeakKeyDictionary()
        self._shared: openai.AsyncOpenAI | None = None  # the one client on the shared loop
        self._poster: _ChatPoster | None = None  # how _shared posts a plain chat call
        self._pid = os.getpid()

    # -- identity ------------------------------------------------------------
    @property
    def display_url(self) -> str:
        return display_url(self.base_url or DEFAULT_BASE_URL)

    def __repr__(self) -> str:
        return f"OpenAIEngine(model={self.model!r}, base_url={self.display_url!r})"

    def secret_values(self) -> list[str]:
        """Strings that must never be written anywhere (see :func:`_credentials`)."""
        return list(self._secrets)

    def cache_fingerprint(self) -> dict[str, Any]:
        """What besides the request decides the reply: server and default parameters."""
        return {"model": self.model, "base_url": self.base_url, "params": self.params}

    # -- clients ---------------------------------------------------------------
    def _forget_if_forked(self) -> None:
        """Drop clients inherited through fork(): their pooled sockets belong to the parent.

        Call with ``self._lock`` held.
        """
        if self._pid != os.getpid():
            self._client, self._shared, self._poster = None, None, None
            self._pid = os.getpid()
            self._aclients = weakref.WeakKeyDictionary()

    @property
    def _own_sync_http(self) -> bool:
        """Sync calls go through the caller's own sync ``http_client`` (its transport)."""
        return self._http_client is not None and self._async_http_client is None

    @property
    def client(self) -> openai.OpenAI:
        client = self._client
        if client is None or self._pid != os.getpid():
            with self._lock:
                self._forget_if_forked()
                if self._client is None:
                    self._client = openai.OpenAI(http_client=self._sync_http(), **self._client_kw)
                client = self._client
        return client

    def _sync_http(self) -> Any:
        """The sync HTTP client, made to honour each attempt's total deadline."""
        http = self._http_client
        if http is None:
            http = _OwnedHttpClient()
        if not install_deadline(http):
            warnings.warn(
                "this http_client's transport cannot be given a total deadline: a server "
                "that trickles its reply is bounded only per read",
                stacklevel=4,
            )
        return http

    async def _aclient(self) -> openai.AsyncOpenAI:
        if self._async_http_client is None:
            return self._shared_client()
        # a caller's own async HTTP client belongs to the loop it runs on: one SDK client
        # per loop around it (theirs to close)
        loop = asyncio.get_running_loop()
        with self._lock:
            self._forget_if_forked()
            entry = self._aclients.get(loop)
            if entry is None:
                entry = (openai.AsyncOpenAI(http_client=self._async_http_client,
                                            **self._client_kw), None)
                self._aclients[loop] = entry
        return entry[0]

    def _shared_client(self) -> openai.AsyncOpenAI:
        """This engine's one client (one HTTP pool, one SSL context), on the shared loop."""
        client = self._shared
        if client is None or self._pid != os.getpid():
            with self._lock:
                self._forget_if_forked()
                if self._shared is None:
                    http = _shared_http(self.max_concurrency)
                    self._shared = openai.AsyncOpenAI(http_client=http, **self._client_kw)
                    self._poster = (_ChatPoster(self._shared, http)
                                    if _ChatPoster.usable(self._shared) else None)
                    weakref.finalize(self, _close_later, shared_loop().loop, self._shared)
                client = self._shared
        return client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            shared, self._shared, self._poster = self._shared, None, None
        if client is not None:
            client.close()
        if shared is not None:
            loop = shared_loop()
            if loop.in_loop():
                _close_later(loop.loop, shared)
            else:
                try:
                    loop.run(shared.close())
                except RuntimeError:  # the shared loop is already gone (exit)
                    pass

    # -- request building ----------------------------------------------------
    def completion_limit(self, request: Request) -> int:
        """The reply-token limit this engine sends with ``request`` (what a Meter reserves)."""
        model = request.model or self.model
        return completion_limit(request, model, self.params, self.completion_limits)

    def _attempt_seconds(self, kwargs: dict[str, Any]) -> float | None:
        """The total time one call may take: the timeout for each of the SDK's attempts."""
        timeout = checked_timeout(kwargs.get("timeout", self.timeout))
        return None if timeout is None else timeout * (self.max_retries + 1)

    def _kwargs(self, request: Request, *, native_schema: bool) -> dict[str, Any]:
        params = {**self.params, **request.params}
        stream = bool(params.pop("stream", False)) or request.streaming
        params.pop("stream_options", None)
        timeout = params.pop("timeout", None)
        model = request.model or self.model
        for name in LIMIT_NAMES:
            params.pop(name, None)
        params[completion_limit_param(model)] = self.completion_limit(request)
        messages = [dict(m) for m in request.messages]
        fmt = request.response_format
        if fmt is not None:
            if native_schema:
                params["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": schema_name(fmt),
                        "schema": fmt.model_json_schema(),
                        "strict": False,
                    },
                }
            else:
                params.pop("response_format", None)
                messages = append_schema(messages, fmt)
        kwargs: dict[str, Any] = {"model": model, "messages": messages}
        if request.tools:
            kwargs["tools"] = request.tools
        if stream:  # usage comes in a last chunk, only when asked for
            kwargs["stream"] = True
            kwargs["stream_options"] = {"include_usage": True}
        extra = {}
        for k, v in params.items():
            (kwargs if k in _SDK_PARAMS else extra)[k] = v
        if extra:
            kwargs["extra_body"] = extra
        if timeout is not None:
            kwargs["timeout"] = timeout
        return kwargs

    # -- errors ----------------------------------------------------------------
    def _map_error(self, e: Exception, model: str) -> LLMError:
        url = self.display_url
        secrets = self.secret_values()

        def clean(msg: str) -> str:
            return redact(msg, secrets)

        if isinstance(e, LLMError):
            return e
        if isinstance(e, openai.APITimeoutError | TimeoutError):
            within = f" within {self.timeout:g}s" if self.timeout else ""
            return LLMTimeout(clean(f"request to {url} timed out: no complete reply{within}"))
        if isinstance(e, openai.APIConnectionError):
            cause = e.__cause__ or e.__context__
            why = f": {cause}" if cause else ""
            return ConnectionFailed(
                clean(f"could not connect to the LLM server at {url}{why}"), url=url
            )
        if isinstance(e, openai.APIStatusError):
            status = e.status_code
            msg = clean(str(e.message))
            if status == 429 and e.code == "insufficient_quota":
                return LLMError(f"{url} answered 429 insufficient_quota: {msg} (check billing)")
            if status in _RETRYABLE_STATUS or status >= 500:
                return RetryableError(
                    f"{url} answered HTTP {status}: {msg}",
                    status=status,
                    retry_after=retry_after(e.response.headers),
                )
            if status == 401:
                return LLMError(
                    f"authentication failed (HTTP 401) at {url}: check OPENAI_API_KEY or the "
                    "api_key passed to the engine"
                )
            if status == 404:
                return LLMError(f"{url} answered HTTP 404 for model {model!r}: {msg}")
            return LLMError(f"{url} rejected the request (HTTP {status}): {msg}")
        if isinstance(e, ValueError):  # a body that is not JSON
            return RetryableError(clean(f"{url} sent a malformed response: {e}"))
        if isinstance(e, openai.OpenAIError):
            return LLMError(clean(f"OpenAI client error talking to {url}: {e}"))
        return LLMError(clean(f"unexpected error talking to {url}: {type(e).__name__}: {e}"))

    def _failed(self, e: Exception, kwargs: dict[str, Any], schema_fallback: bool) -> Exception:
        """Our error for ``e``; a rejected json_schema becomes a signal to retry as text."""
        err = self._map_error(e, kwargs["model"])
        if schema_fallback and isinstance(
            e, openai.BadRequestError | openai.UnprocessableEntityError
        ):
            return _SchemaRejected(err)
        return err

    # -- replies ---------------------------------------------------------------
    def _completion(
        self, resp: Any, request: Request, kwargs: dict[str, Any], t0: float
    ) -> Completion:
        model = kwargs["model"]
        url = self.display_url
        if not isinstance(resp, ChatCompletion):
            raise RetryableError(f"{url} sent a response that is not a chat completion")
        if not resp.choices:
            raise RetryableError(f"{url} sent a chat completion without choices")
        choice = resp.choices[0]
        text = choice.message.content or ""
        calls = [ToolCall(c.id, c.function.name, c.function.arguments or "{}")
                 for c in choice.message.tool_calls or [] if getattr(c, "function", None)]
        if resp.usage is not None:
            usage = Usage(resp.usage.prompt_tokens or 0, resp.usage.completion_tokens or 0)
        else:
            usage = _estimated_usage(request, text, calls)
        return Completion(
            text=text,
            model=resp.model or model,
            usage=usage,
            parsed=_parsed(request, text),
            finish_reason=choice.finish_reason,
            latency_s=time.perf_counter() - t0,
            completion_limit=sent_limit(kwargs),
            tool_calls=calls,
        )

    def _native_schema(self) -> bool:
        return self.json_schema_supported is not False

    def complete(self, request: Request) -> Completion:
        """One call, from a thread: on the shared loop, unless a sync ``http_client`` was
        given (then through it, with its total deadline)."""
        if not self._own_sync_http and not shared_loop().in_loop():
            return shared_loop().run(self._acomplete(request))
        t0 = time.perf_counter()
        native = request.response_format is not None and self._native_schema()
        kwargs = self._kwargs(request, native_schema=native)
        try:
            resp = self._send(kwargs, request, schema_fallback=native)
        except _SchemaRejected:
            kwargs = self._kwargs(request, native_schema=False)
            resp = self._send(kwargs, request, schema_fallback=False)
            self.json_schema_supported = False  # only now: text mode worked, schema was the issue
        else:
            if native:
                self.json_schema_supported = True
        if isinstance(resp, _Streamed):
            return resp.completion(kwargs, t0)
        return self._completion(resp, request, kwargs, t0)

    def _send(self, kwargs: dict[str, Any], request: Request, *, schema_fallback: bool) -> Any:
        try:
            with deadline(self._attempt_seconds(kwargs)):
                resp = self.client.chat.completions.create(**kwargs)
                if not kwargs.get("stream"):
                    return resp
                streamed = _Streamed(request)
                with resp:  # the deadline covers reading the whole stream
                    for chunk in resp:
                        streamed.add(chunk)
                return streamed
        except Exception as e:
            raise self._failed(e, kwargs, schema_fallback) from e

    async def acomplete(self, request: Request) -> Completion:
        """One call from any event loop; it runs on the shared loop (see :mod:`.loop`),
        unless an ``async_http_client`` of the caller's was given."""
        if self._async_http_client is not None:
            return await self._acomplete(request)
        return await shared_loop().arun(self._acomplete(request))

    async def _acomplete(self, request: Request) -> Completion:
        t0 = time.perf_counter()
        native = request.response_format is not None and self._native_schema()
        kwargs = self._kwargs(request, native_schema=native)
        try:
            resp = await self._asend(kwargs, request, schema_fallback=native)
        except _SchemaRejected:
            kwargs = self._kwargs(request, native_schema=False)
            resp = await self._asend(kwargs, request, schema_fallback=False)
            self.json_schema_supported = False
        else:
            if native:
                self.json_schema_supported = True
        if isinstance(resp, _Streamed):
            return resp.completion(kwargs, t0)
        return self._completion(resp, request, kwargs, t0)

    async def _asend(self, kwargs: dict[str, Any], request: Request, *,
                     schema_fallback: bool) -> Any:
        try:
            client = await self._aclient()
            async with asyncio.timeout(self._attempt_seconds(kwargs)):
                if kwargs.get("stream"):
                    resp = await client.chat.completions.create(**kwargs)
                    streamed = _Streamed(request)
                    async with resp:
                        async for chunk in resp:
                            streamed.add(chunk)
                    return streamed
                poster = self._poster  # only the shared client has one
                if poster is not None and poster.client is client:
                    return await poster.post(kwargs)
                return await client.chat.completions.create(**kwargs)
        except Exception as e:
            raise self._failed(e, kwargs, schema_fallback) from e

    # -- Batch API (see tracegrad.llm.batch) -----------------------------------------
    def batch_body(self, request: Request) -> dict[str, Any]:
        """``request`` as the body of one line of a Batch API input file: the same JSON
        :meth:`complete` would send, extra fields inlined (a batch line has no SDK)."""
        native = request.response_format is not None and self._native_schema()
        return wire_body(self._kwargs(request, native_schema=native))

    def batch_completion(self, body: Any, request: Request) -> Completion:
        """The reply of a batch output line (a chat completion body) as a Completion."""
        try:
            resp = ChatCompletion.model_validate(body)
        except ValueError as e:
            raise RetryableError(f"{self.display_url} sent a batch line that is not a chat "
                                 f"completion: {str(e)[:200]}") from None
        c = self._completion(resp, request, self.batch_body(request), time.perf_counter())
        c.batch = True
        return c

    def map_error(self, e: Exception) -> LLMError:
        """An SDK error of a files or batches call as one of our errors, key-free."""
        return self._map_error(e, self.model)
