"""The lean HTTP/1.1 transport: framing, keep-alive, stale connections, timeouts, errors,
TLS, and the SDK's calls (plain and streamed) through it."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx2
import pytest

from tracegrad.llm.base import make_request
from tracegrad.llm.http1 import Http1Transport
from tracegrad.llm.openai import OpenAIEngine
from tracegrad.testing import FakeOpenAIServer

SECRET = "sk-test-SECRET-1234567890"

Handler = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], "asyncio.Future[None]"]


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head + await reader.readexactly(length)


@contextlib.asynccontextmanager
async def _listening(handle, **kw):
    """A raw asyncio server on a free loopback port, closed on exit; yields the port."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0, **kw)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def _serve(script: Callable[[int, bytes], bytes | None]):
    """Run ``check(client, server_state)`` against a raw server whose reply to the n-th
    request on a connection is ``script(n, request)`` (None: close without replying)."""
    state = {"connections": 0, "requests": []}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state["connections"] += 1
        n = 0
        while (req := await _read_request(reader)) is not None:
            state["requests"].append(req)
            reply = script(n, req)
            n += 1
            if reply is None:
                break
            writer.write(reply)
            await writer.drain()
            if b"connection: close" in reply.lower() or state.get("one_per_connection"):
                break
        writer.close()

    async def run(check):
        async with _listening(handle) as port, httpx2.AsyncClient(
                transport=Http1Transport(), timeout=5) as client:
            return await check(client, f"http://127.0.0.1:{port}", state)

    return run


def _ok(body: bytes, *extra: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body) + b"".join(
        e + b"\r\n" for e in extra) + b"\r\n" + body)


def test_content_length_replies_reuse_one_connection():
    async def check(client, url, state):
        texts = [(await client.post(url + "/x", content=b"hi")).text for _ in range(3)]
        return texts, state["connections"], state["requests"][0]

    texts, conns, first = asyncio.run(_serve(lambda n, r: _ok(b"reply %d" % n))(check))
    assert texts == ["reply 0", "reply 1", "reply 2"] and conns == 1
    assert first.startswith(b"POST /x HTTP/1.1\r\n") and b"content-length: 2" in first.lower()
    assert first.endswith(b"\r\n\r\nhi") and b"host: 127.0.0.1" in first.lower()


def test_chunked_and_close_delimited_bodies():
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    to_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"

    async def check(client, url, state):
        a = (await client.get(url)).text
        b = (await client.get(url)).text  # same connection: chunked keeps it
        c = (await client.get(url)).text  # read to EOF, then the connection is gone
        d = (await client.get(url)).text  # so this one opens a new connection
        return [a, b, c, d], state["connections"]

    replies = [chunked, chunked, to_close, _ok(b"fresh")]
    texts, conns = asyncio.run(_serve(lambda n, r: replies.pop(0))(check))
    assert texts == ["hello world", "hello world", "until the end", "fresh"] and conns == 2


def test_a_connection_the_server_closed_while_idle_is_not_used_again():
    async def check(client, url, state):
        state["one_per_connection"] = True  # the server closes each connection after a reply
        first = (await client.post(url, content=b"1")).text
        await asyncio.sleep(0.05)  # the close reaches the client's idle connection
        second = (await client.post(url, content=b"2")).text
        return first, second, state["connections"], len(state["requests"])

    assert asyncio.run(_serve(lambda n, r: _ok(b"ok"))(check)) == ("ok", "ok", 2, 2)


def test_a_reused_connection_closed_after_the_request_is_an_error_not_a_retry():
    async def check(client, url, state):
        first = (await client.post(url, content=b"1")).text
        with pytest.raises(httpx2.RemoteProtocolError):  # it may have been served
            await client.post(url, content=b"2")
        return first, state["connections"], len(state["requests"])

    # each connection answers its first request and drops the second unanswered
    assert asyncio.run(_serve(lambda n, r: _ok(b"ok") if n == 0 else None)(check)) == (
        "ok", 1, 2)


def test_a_fresh_connection_closed_without_reply_is_an_error_not_a_retry():
    async def check(client, url, state):
        with pytest.raises(httpx2.RemoteProtocolError):
            await client.post(url, content=b"x")
        return state["connections"]

    assert asyncio.run(_serve(lambda n, r: None)(check)) == 1


def test_bad_replies_are_protocol_errors():
    for reply in (b"SPDY/3 200 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
                  b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nshort",
                  b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"):
        async def check(client, url, state):
            with pytest.raises(httpx2.RemoteProtocolError):
                await client.get(url)

        asyncio.run(_serve(lambda n, r, reply=reply: reply if n == 0 else None)(check))


def test_read_and_connect_timeouts_are_httpx_timeouts():
    async def slow(reader, writer):
        await asyncio.sleep(2)
        writer.close()

    async def run():
        async with _listening(slow) as port, httpx2.AsyncClient(
                transport=Http1Transport()) as client:
            with pytest.raises(httpx2.ReadTimeout):
                await client.get(f"http://127.0.0.1:{port}/", timeout=0.2)
            with pytest.raises(httpx2.ConnectError):
                await client.get("http://127.0.0.1:1/", timeout=2)

    asyncio.run(run())


def test_unread_bodies_close_their_connection_and_idle_ones_are_capped():
    async def check(client, url, state):
        async with client.stream("GET", url) as resp:  # left unread: cannot be reused
            assert resp.status_code == 200
        await client.get(url)
        return state["connections"]

    assert asyncio.run(_serve(lambda n, r: _ok(b"x" * 100))(check)) == 2


def test_tls_with_a_trusted_self_signed_certificate(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True,
                   capture_output=True)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def handle(reader, writer):
        await _read_request(reader)
        writer.write(_ok(b"secure", b"Connection: close"))
        await writer.drain()
        writer.close()

    async def run():
        async with _listening(handle, ssl=server_ctx) as port:
            async with httpx2.AsyncClient(transport=Http1Transport(client_ctx)) as client:
                ok = (await client.get(f"https://localhost:{port}/", timeout=5)).text
            async with httpx2.AsyncClient(transport=Http1Transport()) as client:
                with pytest.raises(httpx2.ConnectError):  # not trusted by the default context
                    await client.get(f"https://localhost:{port}/", timeout=5)
            return ok

    assert asyncio.run(run()) == "secure"


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_the_engine_sends_plain_and_streamed_calls_through_it(server: FakeOpenAIServer,
                                                              no_proxy: None):
    server.add_replies(*["ok"] * 24, "streamed reply")
    eng = OpenAIEngine("gpt-4o-mini", base_url=server.url, api_key=SECRET, max_concurrency=24)
    with ThreadPoolExecutor(24) as pool:
        texts = list(pool.map(lambda i: eng.complete(make_request(f"q{i}")).text, range(24)))
    assert texts == ["ok"] * 24
    transport = eng._shared_client()._client._transport
    assert isinstance(transport, Http1Transport)
    assert transport.opened <= 24 and sum(len(v) for v in transport._idle.values()) >= 1
    pieces: list[str] = []
    streamed = eng.complete(replace(make_request("s"), on_token=pieces.append))
    assert streamed.text == "streamed reply" and "".join(pieces) == "streamed reply"
    assert len(pieces) > 1  # it came as a stream, through the same transport


def test_a_stream_longer_than_the_read_timeout_is_fine_while_it_keeps_coming():
    async def handle(reader, writer):
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(6):
            await asyncio.sleep(0.1)
            writer.write(b"2\r\n%02d\r\n" % i)
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def run():
        async with _listening(handle) as port:
            async with httpx2.AsyncClient(transport=Http1Transport()) as client:
                async with client.stream("GET", f"http://127.0.0.1:{port}/",
                                         timeout=httpx2.Timeout(5, read=0.35)) as resp:
                    parts = [c async for c in resp.aiter_bytes()]
            await asyncio.sleep(0.5)  # no timer left armed to cancel this task later
            return b"".join(parts)

    # 0.6 s of body, each piece within 0.35 s: httpx's read timeout is per read
    assert asyncio.run(run()) == b"000102030405"


def test_an_http_1_0_reply_is_reused_only_when_it_says_keep_alive():
    async def check(client, url, state):
        texts = [(await client.get(url)).text for _ in range(3)]
        return texts, state["connections"]

    plain = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
    kept = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
    # the server keeps every connection open, but HTTP/1.0 closes unless it says otherwise
    assert asyncio.run(_serve(lambda n, r: plain)(check)) == (["ok"] * 3, 3)
    assert asyncio.run(_serve(lambda n, r: kept)(check)) == (["ok"] * 3, 1)


def test_a_header_with_a_line_break_is_refused_not_sent():
    async def check(client, url, state):
        with pytest.raises(httpx2.LocalProtocolError):
            await client.get(url, headers={"Authorization": "Bearer sk-abc\r\nX-Injected: 1"})
        return len(state["requests"])

    assert asyncio.run(_serve(lambda n, r: _ok(b"x"))(check)) == 0


def test_conflicting_content_lengths_are_a_protocol_error():
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 11\r\n\r\nhello"

    async def check(client, url, state):
        with pytest.raises(httpx2.RemoteProtocolError):
            await client.get(url)

    asyncio.run(_serve(lambda n, r: reply)(check))
