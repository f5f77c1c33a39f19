"""A lean HTTP/1.1 transport for the SDK's async client: keep-alive connections on asyncio
streams, nothing else.

With a whole minibatch in flight, every call's client-side CPU runs on the one loop that
sends them all (:mod:`tracegrad.llm.loop`), so it adds up: httpcore's pool bookkeeping
and h11's event machinery cost more per call than the request itself. This transport
writes the request head itself, reads the reply by ``Content-Length`` or chunked
framing, and keeps the connection for the next call; httpx above it still builds the
request, decodes ``Content-Encoding`` and raises its own errors, so the SDK and
:class:`~tracegrad.llm.openai._ChatPoster` see no difference.

Scope, on purpose: HTTP/1.1 over TCP or TLS (the SDK's default SSL context), no proxies
(with a proxy in the environment the SDK's own transport is used), no HTTP/2 (the SDK
does not ask for it). An idle connection the server closed is never reused (asyncio has
read its end already: no socket probe per call, which is what httpcore pays); one that
fails while the request is written is retried once on a new connection. A connection
closed after the request was sent is an error, not a retry: the server may have served
it, and retrying is the :class:`~tracegrad.llm.limits.Limits` layer's call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2

__all__ = ["Http1Transport"]

_HEAD_LIMIT = 64 * 1024  # reply head (status line and headers)
_READ = 64 * 1024  # body bytes per read


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = 0.0

    def usable(self, expiry: float) -> bool:
        return (not self.reader.at_eof() and not self.writer.is_closing()
                and time.monotonic() - self.idle_since < expiry)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class _Stale(Exception):
    """A reused connection failed while the request was being written."""


def _timeout(request: httpx2.Request, kind: str) -> float | None:
    return (request.extensions.get("timeout") or {}).get(kind)


class Http1Transport(httpx2.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 connections per (scheme, host, port); see the module doc."""

    def __init__(self, ssl_context: Any = None, max_idle: int = 100,
                 keepalive_expiry: float = 5.0) -> None:
        self._ssl = ssl_context
        self.max_idle, self.expiry = max(1, int(max_idle)), keepalive_expiry
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self.opened = 0  # connections opened, for tests and reports

    def _ssl_context(self) -> Any:
        if self._ssl is None:  # the SDK's: certifi, or SSL_CERT_FILE / SSL_CERT_DIR
            self._ssl = httpx2.create_ssl_context()
            self._ssl.set_alpn_protocols(["http/1.1"])  # what this transport speaks
        return self._ssl

    async def _connect(self, request: httpx2.Request, key: tuple[str, str, int]) -> _Conn:
        scheme, host, port = key
        ssl = self._ssl_context() if scheme == "https" else None
        try:
            async with asyncio.timeout(_timeout(request, "connect")):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=ssl, server_hostname=host if ssl else None,
                    limit=_HEAD_LIMIT)
        except TimeoutError as e:
            raise httpx2.ConnectTimeout(f"connecting to {host}:{port} timed out",
                                        request=request) from e
        except OSError as e:
            raise httpx2.ConnectError(f"cannot connect to {host}:{port}: {e}",
                                      request=request) from e
        self.opened += 1
        return _Conn(reader, writer)

    def _take(self, key: tuple[str, str, int]) -> _Conn | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.usable(self.expiry):
                return conn
            conn.close()
        return None

    def _give_back(self, key: tuple[str, str, int], conn: _Conn) -> None:
        idle = self._idle.setdefault(key, [])
        while idle and not idle[0].usable(self.expiry):  # oldest first: close the dead
            idle.pop(0).close()
        if len(idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx2.UnsupportedProtocol(f"unsupported scheme {url.scheme!r}",
                                             request=request)
        key = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        head = _request_head(request)
        body = await request.aread()
        te = request.headers.get("transfer-encoding", "")
        if "chunked" in te.lower():  # a body of unknown length: one chunk, then the end
            body = (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
        while True:
            conn = self._take(key)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(request, key)
            try:
                return await self._exchange(request, key, conn, head + body, reused)
            except _Stale:
                conn.close()  # it failed while the request was written: once more, anew
                continue
            except BaseException:
                conn.close()
                raise

    async def _exchange(self, request: httpx2.Request, key: tuple[str, str, int], conn: _Conn,
                        data: bytes, reused: bool) -> httpx2.Response:
        try:
            async with asyncio.timeout(_timeout(request, "write")):
                conn.writer.write(data)
                await conn.writer.drain()
        except TimeoutError as e:
            raise httpx2.WriteTimeout("writing the request timed out", request=request) from e
        except OSError as e:
            if reused:
                raise _Stale from e
            raise httpx2.WriteError(str(e), request=request) from e
        while True:
            version, status, reason, headers = await self._read_head(request, conn)
            if not 100 <= status < 200 or status == 101:
                break
        try:
            framing = _framing(request.method, status, headers)
        except ValueError as e:
            raise httpx2.RemoteProtocolError(str(e), request=request) from e
        conn_hdr = (_header(headers, b"connection") or b"").lower()
        keep = (framing != "close" and status != 101  # HTTP/1.0 keeps only when it says so
                and (b"keep-alive" in conn_hdr if version == b"HTTP/1.0"
                     else b"close" not in conn_hdr))
        stream = _Body(self, key, conn, request, framing, keep)
        return httpx2.Response(status, headers=headers, stream=stream,
                               extensions={"http_version": version,
                                           "reason_phrase": reason})

    async def _read_head(self, request: httpx2.Request, conn: _Conn
                         ) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]:
        try:
            async with asyncio.timeout(_timeout(request, "read")):
                raw = await conn.reader.readuntil(b"\r\n\r\n")
        except TimeoutError as e:
            raise httpx2.ReadTimeout("reading the reply timed out", request=request) from e
        except asyncio.IncompleteReadError as e:  # not retried: it may have been served
            raise httpx2.RemoteProtocolError("the server closed the connection without a "
                                             "complete reply", request=request) from e
        except asyncio.LimitOverrunError as e:
            raise httpx2.RemoteProtocolError("the reply's headers are too long",
                                             request=request) from e
        except OSError as e:
            raise httpx2.ReadError(str(e), request=request) from e
        return _parse_head(raw, request)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


def _request_head(request: httpx2.Request) -> bytes:
    target = request.url.raw_path or b"/"
    lines = [request.method.encode("ascii") + b" " + target + b" HTTP/1.1"]
    for k, v in request.headers.raw:
        if b"\r" in k + v or b"\n" in k + v or b"\0" in k + v or b":" in k:
            raise httpx2.LocalProtocolError(f"illegal header {k!r}", request=request)
        lines.append(k + b": " + v)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _parse_head(raw: bytes, request: httpx2.Request
                ) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]:
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise httpx2.RemoteProtocolError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}",
                                         request=request)
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name.strip():
            raise httpx2.RemoteProtocolError(f"malformed header line: {line[:80]!r}",
                                             request=request)
        headers.append((name.strip(), value.strip()))
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else b"", headers


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    return next((v for k, v in headers if k.lower() == name), None)


def _framing(method: str, status: int, headers: list[tuple[bytes, bytes]]) -> str | int:
    """How the body ends: a byte count, ``"chunked"``, or ``"close"`` (read to EOF)."""
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return 0
    te = _header(headers, b"transfer-encoding")
    if te is not None and b"chunked" in te.lower():
        return "chunked"
    lengths = {v.strip() for k, vs in headers if k.lower() == b"content-length"
               for v in vs.split(b",")}
    if not lengths:
        return "close"
    if len(lengths) > 1 or not next(iter(lengths)).isdigit():
        raise ValueError("conflicting or malformed Content-Length")
    return int(next(iter(lengths)))


class _Body(httpx2.AsyncByteStream):
    """A reply body read as it arrives; the connection goes back to the pool once the
    body was read to its end (and the server keeps it open), else it is closed."""

    def __init__(self, transport: Http1Transport, key: tuple[str, str, int], conn: _Conn,
                 request: httpx2.Request, framing: str | int, keep: bool) -> None:
        self.transport, self.key, self.conn, self.request = transport, key, conn, request
        self.framing, self.keep, self.done = framing, keep, False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks(self.conn.reader):
            yield chunk
        self.done = True

    async def _io(self, aw: Any) -> Any:
        """One read, with httpx's per-read timeout; errors as httpx's."""
        try:
            async with asyncio.timeout(_timeout(self.request, "read")):
                return await aw
        except TimeoutError as e:
            raise httpx2.ReadTimeout("reading the reply timed out",
                                     request=self.request) from e
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                OSError) as e:
            raise httpx2.RemoteProtocolError("the reply's body is cut short or malformed",
                                             request=self.request) from e

    async def _chunks(self, reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
        if self.framing == "chunked":
            while True:
                size_line = await self._io(reader.readuntil(b"\r\n"))
                field = size_line.split(b";", 1)[0].strip()
                if not field or field.strip(b"0123456789abcdefABCDEF"):
                    raise httpx2.RemoteProtocolError(f"bad chunk size {size_line[:40]!r}",
                                                     request=self.request)
                size = int(field, 16)
                if size == 0:
                    while (await self._io(reader.readuntil(b"\r\n"))) != b"\r\n":
                        pass
                    return
                data = await self._io(reader.readexactly(size + 2))
                if data[-2:] != b"\r\n":
                    raise httpx2.RemoteProtocolError("chunk not followed by CRLF",
                                                     request=self.request)
                yield data[:-2]
        elif self.framing == "close":
            while chunk := await self._io(reader.read(_READ)):
                yield chunk
            self.keep = False
        else:
            left = int(self.framing)
            while left > 0:
                chunk = await self._io(reader.read(min(left, _READ)))
                if not chunk:
                    raise httpx2.RemoteProtocolError("the server closed the connection in the "
                                                     "middle of the reply", request=self.request)
                left -= len(chunk)
                yield chunk

    async def aclose(self) -> None:
        conn, self.conn = self.conn, None  # type: ignore[assignment]
        if conn is None:
            return
        if self.done and self.keep:
            self.transport._give_back(self.key, conn)
        else:
            conn.close()
