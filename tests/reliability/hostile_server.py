"""A small OpenAI-compatible server on 127.0.0.1 that lies and stalls on purpose.

The shared FakeOpenAIServer answers honestly (its faults are transport faults); the
trust tests need a server that reports whatever usage it likes, sends replies far
longer than the limit it was given, or sends its reply one byte at a time so that no
gap between bytes ever reaches a client's read timeout. It records every request body
so a test can check what the client asked for (``max_tokens``).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[dict[str, Any]], tuple[str, dict[str, int] | None]]


def honest_reply(body: dict[str, Any]) -> tuple[str, dict[str, int] | None]:
    """A short answer whose usage is what a real server would report."""
    return "fine", {"prompt_tokens": 20, "completion_tokens": 1}


def huge_reply(content_bytes: int = 200_000, completion_tokens: int = 10_000_000) -> Reply:
    """Replies of ``content_bytes`` characters that report ``completion_tokens`` used,
    whatever limit the request carried: the server the issue's budget run met."""

    def reply(body: dict[str, Any]) -> tuple[str, dict[str, int] | None]:
        return "x" * content_bytes, {"prompt_tokens": 20, "completion_tokens": completion_tokens}

    return reply


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # http.server's backlog of 5 drops bursts of connects


class HostileServer:
    """``with HostileServer(reply=..., trickle=1.0) as s: s.url``.

    ``reply(body) -> (content, usage or None)`` decides each chat reply. ``trickle``
    (seconds) sends the whole HTTP response, status line included, one byte per that
    many seconds; 0 sends it at once.
    """

    def __init__(self, reply: Reply = honest_reply, *, trickle: float = 0.0,
                 model: str = "gpt-4o-mini") -> None:
        self.reply = reply
        self.trickle = trickle
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> HostileServer:
        self._httpd = _HTTPServer(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01},
                         daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()  # trickling handlers stop at their next byte
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def record(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(body)

    def response_bytes(self, body: dict[str, Any]) -> bytes:
        content, usage = self.reply(body)
        payload: dict[str, Any] = {
            "id": f"chatcmpl-hostile-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content}}],
        }
        if usage is not None:
            payload["usage"] = {**usage, "total_tokens": sum(usage.values())}
        data = json.dumps(payload).encode()
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()
        return head + data


def _handler(server: HostileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            server.record(body)
            out = server.response_bytes(body)
            try:
                if server.trickle:
                    self._trickle(out)
                else:
                    self.wfile.write(out)
                    self.wfile.flush()
            except OSError:  # the client gave up: that is what the tests want
                self.close_connection = True

        def _trickle(self, out: bytes) -> None:
            for i in range(len(out)):
                if server._stopping.wait(server.trickle):
                    self.close_connection = True
                    return
                self.wfile.write(out[i:i + 1])
                self.wfile.flush()

    return Handler


class TrickleProxy:
    """A TCP relay on 127.0.0.1 in front of another server (``with TrickleProxy(port)``).

    Bytes pass through at once, except a chunk from the server that contains ``marker``
    (a reply the test chose): that chunk and the rest of its connection's replies go one
    byte per ``interval`` seconds. So the fault matrix's world server can make chosen
    replies trickle without a server of its own: headers arrive, then the body stalls
    byte by byte, and no gap ever reaches the client's read timeout.
    """

    def __init__(self, upstream_port: int, marker: bytes, interval: float = 0.2) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.marker = marker
        self.interval = interval
        self.trickled = 0  # replies slowed down
        self.waited_out = 0  # slowed chunks the client read to the end instead of giving up
        self._stopping = threading.Event()
        self._sock: socket.socket | None = None

    @property
    def port(self) -> int:
        assert self._sock is not None
        return self._sock.getsockname()[1]

    def __enter__(self) -> TrickleProxy:
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self._sock.settimeout(0.05)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        if self._sock is not None:
            self._sock.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._sock.accept()  # type: ignore[union-attr]
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.create_connection(self.upstream)
            for src, dst, slow in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pump, args=(src, dst, slow), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, may_trickle: bool) -> None:
        trickling = False
        try:
            while not self._stopping.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if may_trickle and not trickling and self.marker in data:
                    trickling = True
                    self.trickled += 1
                if trickling:
                    self._send_slowly(dst, data)
                    self.waited_out += 1
                else:
                    dst.sendall(data)
        except OSError:
            pass  # either side gave up: close both
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def _send_slowly(self, dst: socket.socket, data: bytes) -> None:
        for i in range(len(data)):
            if self._stopping.wait(self.interval):
                raise OSError("proxy stopping")
            dst.sendall(data[i:i + 1])
