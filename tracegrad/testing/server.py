"""FakeOpenAIServer: a real HTTP server on 127.0.0.1 that speaks the Chat Completions API.

Mocking the ``openai`` package would test our assumptions about it, not the package. This
server lets the real client do real HTTP, so retries, timeouts, dropped connections, rate
limits and concurrency are exercised the way they happen in production -- offline, fast
and deterministic. Faults are queued with :meth:`FakeOpenAIServer.inject`.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..llm.base import content_to_text, estimate_tokens
from ..llm.mock import InFlight
from .batches import FakeBatches, parse_multipart

__all__ = ["AUTHORIZATION_MARK", "FakeOpenAIServer", "FAULTS"]

FAULTS = (
    "429",
    "500",
    "502",
    "503",
    "hang",
    "drop",
    "malformed",
    "empty",
    "whitespace",
    "length",
    "huge",
    "400-json-schema",
)

ServerReply = str | dict[str, Any] | Callable[[dict[str, Any]], Any]

AUTHORIZATION_MARK = "<<Authorization>>"
"""With ``echo_authorization=True``, replaced in a reply by the request's Authorization header."""


def body_text(body: dict[str, Any]) -> str:
    """The joined message text of a request body: what reply patterns match against."""
    return "\n".join(content_to_text(m.get("content")) for m in body.get("messages") or [])


def _prompt_tokens(body: dict[str, Any]) -> int:
    return sum(
        estimate_tokens(content_to_text(m.get("content"))) + 4 for m in body.get("messages") or []
    )


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # the default backlog of 5 drops bursts of concurrent connects

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout, cancelled task, process exit) closes its end while
        # the reply is written: that is the client's business, not a server error, and its
        # traceback on stderr would read as a failure of whatever is under test.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Fault:
    def __init__(self, kind: str, retry_after: float | None, seconds: float) -> None:
        self.kind = kind
        self.retry_after = retry_after
        self.seconds = seconds


class FakeOpenAIServer:
    """An OpenAI-compatible server for tests. Use as a context manager or start()/stop().

    ``replies`` takes the same forms as :class:`~tracegrad.testing.MockLLM`: a list
    consumed in order, a callable ``f(body) -> str``, or a mapping ``{regex: reply}``
    matched against the joined message text (a mapped reply may be a callable).
    A reply made by :func:`~tracegrad.testing.tool_reply` makes the model call tools
    (``tool_calls`` in the reply). A request with ``"stream": true`` is answered as
    server-sent events, the text in word-sized chunks, with a usage chunk at the end
    when ``stream_options.include_usage`` asks for it.

    ``echo_authorization`` makes it the server of a careless proxy or a hostile model that
    repeats the credential it was sent: every :data:`AUTHORIZATION_MARK` in a reply becomes
    the request's ``Authorization`` header ("Bearer sk-..."), and a reply without the mark
    gets the header on a line of its own at the end. The key is still never recorded.
    """

    def __init__(
        self,
        replies: Iterable[ServerReply]
        | Callable[[dict[str, Any]], Any]
        | Mapping[str, ServerReply]
        | None = None,
        *,
        default: str | None = "fake reply",
        latency: float = 0.0,
        model: str = "fake-model",
        json_schema_supported: bool = True,
        report_usage: bool = True,
        echo_authorization: bool = False,
        batch_delay: float = 0.0,
    ) -> None:
        self.default = default
        self.echo_authorization = echo_authorization
        self.latency = latency
        self.model = model
        self.json_schema_supported = json_schema_supported
        self.report_usage = report_usage
        self._fn: Callable[[dict[str, Any]], Any] | None = None
        self._rules: list[tuple[re.Pattern[str], ServerReply]] = []
        self._queue: deque[ServerReply] = deque()
        if callable(replies) and not isinstance(replies, Mapping):
            self._fn = replies
        elif isinstance(replies, Mapping):
            self._rules = [(re.compile(k, re.S), v) for k, v in replies.items()]
        elif replies is not None:
            self._queue.extend(replies)
        self._faults: deque[_Fault] = deque()
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._responses: list[dict[str, Any]] = []
        self._in_flight = InFlight()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.batch = FakeBatches(self._batch_answer, delay=batch_delay)
        """Files and batches (``/v1/files``, ``/v1/batches``); ``batch_delay`` is how long a
        batch stays in progress. See :class:`~tracegrad.testing.batches.FakeBatches`."""

    def _batch_answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One batch line answered as the live endpoint would, without faults or latency."""
        content = self._scripted(body)
        if content is None:
            return 500, _error("FakeOpenAIServer has no reply for this request", "server_error")
        return 200, self.completion_body(body, content)

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> FakeOpenAIServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.01},
            daemon=True,
            name="FakeOpenAIServer",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hanging handlers are released so this returns promptly."""
        self._stopping.set()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FakeOpenAIServer is not running; call start() first")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- inspection --------------------------------------------------------
    @property
    def requests(self) -> list[dict[str, Any]]:
        """Received chat request bodies, oldest first.

        Each carries ``_headers`` (lower-cased, without Authorization) and ``_authorized``
        (whether an Authorization header was sent) -- the key itself is never kept.
        """
        with self._lock:
            return list(self._requests)

    @property
    def responses(self) -> list[dict[str, Any]]:
        """The chat completion bodies sent with status 200, oldest first."""
        with self._lock:
            return list(self._responses)

    @property
    def max_in_flight(self) -> int:
        """The most chat requests handled at once (since the last :meth:`reset`)."""
        return self._in_flight.peak

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._responses.clear()
            self._faults.clear()
        self._in_flight.reset_peak()

    # -- scripting ---------------------------------------------------------
    def inject(
        self,
        fault: str,
        times: int = 1,
        *,
        retry_after: float | None = 0,
        seconds: float = 30.0,
    ) -> None:
        """Make the next ``times`` chat requests fail with ``fault`` (see :data:`FAULTS`).

        ``retry_after`` is the Retry-After header of "429" (None omits it); ``seconds`` is
        how long "hang" holds the request before closing it without a reply.
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; choose one of {', '.join(FAULTS)}")
        with self._lock:
            for _ in range(times):
                self._faults.append(_Fault(fault, retry_after, seconds))

    def add_replies(self, *replies: ServerReply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def _next_fault(self) -> _Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _reply_for(self, body: dict[str, Any], authorization: str = "") -> str | dict[str, Any] | None:
        reply = self._scripted(body)
        if reply is None or isinstance(reply, dict) or not self.echo_authorization:
            return reply
        if AUTHORIZATION_MARK in reply:
            return reply.replace(AUTHORIZATION_MARK, authorization)
        return f"{reply}\n{authorization}"

    def _scripted(self, body: dict[str, Any]) -> str | dict[str, Any] | None:
        reply: Any = None
        with self._lock:
            if self._fn is not None:
                reply = self._fn
            elif self._rules:
                text = body_text(body)
                for pat, r in self._rules:
                    if pat.search(text):
                        reply = r
                        break
            elif self._queue:
                reply = self._queue.popleft()
        if reply is None:
            reply = self.default
        if callable(reply):
            reply = reply(body)
        if isinstance(reply, dict):
            return reply
        return None if reply is None else str(reply)

    def _record(self, body: dict[str, Any], headers: Mapping[str, str]) -> None:
        entry = dict(body)
        entry["_headers"] = {
            k.lower(): v for k, v in headers.items() if k.lower() != "authorization"
        }
        entry["_authorized"] = any(k.lower() == "authorization" for k in headers)
        with self._lock:
            self._requests.append(entry)

    def completion_body(
        self,
        body: dict[str, Any],
        content: str,
        finish_reason: str = "stop",
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """An OpenAI-shaped reply to ``body``, with deterministic token counts."""
        calls = [_wire_call(c, i) for i, c in enumerate(tool_calls or [], 1)]
        billed = content + "".join(c["function"]["name"] + c["function"]["arguments"]
                                   for c in calls)
        prompt, completion = _prompt_tokens(body), estimate_tokens(billed)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            message = {"role": "assistant", "content": content or None, "tool_calls": calls}
            finish_reason = "tool_calls" if finish_reason == "stop" else finish_reason
        reply: dict[str, Any] = {
            "id": f"chatcmpl-fake-{self.request_count}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
        }
        if self.report_usage:
            reply["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        with self._lock:
            self._responses.append(reply)
        return reply


def _wire_call(call: dict[str, Any], i: int) -> dict[str, Any]:
    args = call.get("arguments", "{}")
    return {"id": str(call.get("id") or f"call_{i}"), "type": "function",
            "function": {"name": str(call["name"]),
                         "arguments": args if isinstance(args, str) else json.dumps(args)}}


def stream_events(body: dict[str, Any], reply: dict[str, Any]) -> bytes:
    """A completion body re-sent as the server-sent events of a streamed reply."""
    from ..llm.mock import stream_pieces

    choice = reply["choices"][0]
    message = choice["message"]
    head = {k: reply[k] for k in ("id", "created", "model")}

    def chunk(delta: dict[str, Any], finish: str | None = None, **more: Any) -> bytes:
        data = {**head, "object": "chat.completion.chunk", **more,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(data)}\n\n".encode()

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": p}) for p in stream_pieces(message.get("content") or "")]
    for i, call in enumerate(message.get("tool_calls") or []):
        out.append(chunk({"tool_calls": [{"index": i, **call}]}))
    out.append(chunk({}, choice["finish_reason"]))
    if (body.get("stream_options") or {}).get("include_usage") and "usage" in reply:
        data = {**head, "object": "chat.completion.chunk", "choices": [], "usage": reply["usage"]}
        out.append(f"data: {json.dumps(data)}\n\n".encode())
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def _error(message: str, type_: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": None}}


def _route(path: str) -> str:
    return path.split("?")[0].rstrip("/")


def _models_list(model: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": 0, "owned_by": "tracegrad"}],
    }


def _blown_up(content: str, size: int = 1_000_000) -> str:
    """The reply of the "huge" fault: ``content`` repeated to exactly ``size`` characters."""
    return ((content + " ") * (size // (len(content) + 1) + 1))[:size]


_BLANK_REPLIES = {"empty": "", "whitespace": "  \n\t "}
_SCHEMA_REFUSAL = "response_format of type 'json_schema' is not supported by this server"


class _Handler(BaseHTTPRequestHandler):
    """One connection to a FakeOpenAIServer: route, apply the queued fault, reply.

    Faults come in two layers, checked in this order: transport faults replace the reply
    altogether (:meth:`_transport_fault`); the others shape an otherwise normal reply.
    """

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (~40 ms)
    timeout = 30  # idle keep-alive connections end eventually
    fake: FakeOpenAIServer  # set per server by _make_handler

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _send(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def do_GET(self) -> None:
        route = _route(self.path)
        if route == "/v1/models":
            self._send(200, _models_list(self.fake.model))
        elif route.startswith(("/v1/files", "/v1/batches")):
            self._batch_get(route)
        else:
            self._send(404, _error(f"no route GET {self.path}", "invalid_request_error"))

    def do_POST(self) -> None:
        # read the body before anything else: an unread body would be parsed as the next
        # request on this keep-alive connection
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if _route(self.path).startswith(("/v1/files", "/v1/batches")):
            self._batch_post(_route(self.path), raw)
            return
        if _route(self.path) != "/v1/chat/completions":
            self._send(404, _error(f"no route POST {self.path}", "invalid_request_error"))
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._send(400, _error("request body is not JSON", "invalid_request_error"))
            return
        self.fake._record(body, self.headers)
        with self.fake._in_flight:
            self._chat(body)

    def _batch_get(self, route: str) -> None:
        store = self.fake.batch
        parts = route.split("/")[2:]  # files|batches, id, content
        if parts == ["batches"]:
            self._send(200, store.listing())
        elif len(parts) == 2 and parts[0] == "batches":
            self._send(*store.retrieve(parts[1]))
        elif len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
            data = store.content(parts[1])
            if data is None:
                self._send(404, _error(f"no such file: {parts[1]}", "invalid_request_error"))
            else:
                self._send(200, data, {"X-Content": "jsonl"})
        elif len(parts) == 2 and parts[0] == "files" and parts[1] in store.files:
            self._send(200, store.files[parts[1]])
        else:
            self._send(404, _error(f"no route GET {self.path}", "invalid_request_error"))

    def _batch_post(self, route: str, raw: bytes) -> None:
        store = self.fake.batch
        parts = route.split("/")[2:]
        if parts == ["files"]:
            fields = parse_multipart(str(self.headers.get("Content-Type") or ""), raw)
            name, data = fields.get("file", (None, b""))
            purpose = fields.get("purpose", (None, b"batch"))[1].decode()
            self._send(200, store.add_file(data, name or "upload.jsonl", purpose))
        elif parts == ["batches"]:
            try:
                self._send(*store.create(json.loads(raw or b"{}")))
            except json.JSONDecodeError:
                self._send(400, _error("request body is not JSON", "invalid_request_error"))
        elif len(parts) == 3 and parts[0] == "batches" and parts[2] == "cancel":
            self._send(*store.cancel(parts[1]))
        else:
            self._send(404, _error(f"no route POST {self.path}", "invalid_request_error"))

    @property
    def _authorization(self) -> str:
        return str(self.headers.get("Authorization") or "")

    def _chat(self, body: dict[str, Any]) -> None:
        if self.fake.latency:
            self.fake._stopping.wait(self.fake.latency)
        fault = self.fake._next_fault()
        if fault is not None and self._transport_fault(fault):
            return
        kind = fault.kind if fault is not None else None
        if self._refused_schema(body, kind):
            return
        if kind in _BLANK_REPLIES:
            self._send(200, self.fake.completion_body(body, _BLANK_REPLIES[kind]))
            return
        self._answer(body, kind)

    def _transport_fault(self, fault: _Fault) -> bool:
        """Fail the request the way a network or an overloaded server does.

        False when ``fault`` is not of that kind: it then shapes the reply instead.
        """
        kind = fault.kind
        if kind == "429":
            headers = {} if fault.retry_after is None else {
                "Retry-After": f"{fault.retry_after:g}"}
            self._send(429, _error("Rate limit reached (fake)", "rate_limit_error"), headers)
        elif kind in ("500", "502", "503"):
            self._send(int(kind), _error(f"fake server error {kind}", "server_error"))
        elif kind == "hang":
            self.fake._stopping.wait(fault.seconds)
            self._drop()
        elif kind == "drop":
            self._drop()
        elif kind == "malformed":
            self._send(200, b'{"id": "chatcmpl-broken", "choices": [ {"message": ')
        else:
            return False
        return True

    def _refused_schema(self, body: dict[str, Any], kind: str | None) -> bool:
        """Refuse a json_schema response_format, as servers without structured output do
        (always when ``json_schema_supported`` is off, else on the "400-json-schema" fault)."""
        fmt = body.get("response_format") or {}
        wants_schema = isinstance(fmt, dict) and fmt.get("type") == "json_schema"
        if not wants_schema or (kind != "400-json-schema" and self.fake.json_schema_supported):
            return False
        self._send(400, _error(_SCHEMA_REFUSAL, "invalid_request_error", "response_format"))
        return True

    def _reply(self, body: dict[str, Any], reply: dict[str, Any]) -> None:
        """Send a completion body, or its event stream when the request asked to stream."""
        if not body.get("stream"):
            self._send(200, reply)
            return
        data = stream_events(body, reply)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        for line in data.split(b"\n\n")[:-1]:  # one event per write: chunks as they come
            self.wfile.write(line + b"\n\n")
            self.wfile.flush()

    def _answer(self, body: dict[str, Any], kind: str | None) -> None:
        content = self.fake._reply_for(body, self._authorization)
        if isinstance(content, dict):
            text = str(content.get("content") or "")
            self._reply(body, self.fake.completion_body(
                body, text, tool_calls=list(content.get("tool_calls") or [])))
            return
        if content is None:
            self._send(500, _error("FakeOpenAIServer has no reply for this request",
                                   "server_error"))
        elif kind == "length":
            cut = content[: max(1, len(content) // 2)]
            self._reply(body, self.fake.completion_body(body, cut, "length"))
        else:
            if kind == "huge":
                content = _blown_up(content)
            self._reply(body, self.fake.completion_body(body, content))


def _make_handler(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    """A handler class bound to ``server``: http.server builds a handler per connection from
    a class, so the FakeOpenAIServer it answers for has to live on the class."""
    return type("Handler", (_Handler,), {"fake": server})
