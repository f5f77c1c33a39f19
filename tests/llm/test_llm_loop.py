"""One client per engine: every call, from threads or any event loop, runs on the shared loop."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

import tracegrad.llm.openai as openai_mod
from tracegrad.llm import OpenAIEngine
from tracegrad.llm.base import make_request
from tracegrad.llm.loop import SharedLoop, shared_loop
from tracegrad.testing import FakeOpenAIServer

SECRET = "sk-test-SECRET-1234567890"


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[openai.AsyncOpenAI]:
    """Every AsyncOpenAI the engine module builds, in order."""
    made: list[openai.AsyncOpenAI] = []

    class Counting(openai.AsyncOpenAI):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            made.append(self)

    monkeypatch.setattr(openai_mod.openai, "AsyncOpenAI", Counting)
    return made


def test_one_client_serves_two_event_loops_and_many_threads(built, server: FakeOpenAIServer):
    server.add_replies(*[f"r{i}" for i in range(10)])
    eng = OpenAIEngine("gpt-4o-mini", base_url=server.url, api_key=SECRET)
    first = asyncio.run(eng.acomplete(make_request("one")))
    second = asyncio.run(eng.acomplete(make_request("two")))
    with ThreadPoolExecutor(4) as pool:
        rest = list(pool.map(lambda i: eng.complete(make_request(f"t{i}")).text, range(8)))
    assert (first.text, second.text) == ("r0", "r1")
    assert sorted(rest) == sorted(f"r{i}" for i in range(2, 10))
    assert len(built) == 1  # one client (one pool, one SSL context) for all of them
    assert eng._client is None  # and no second, sync client for the threads
    assert server.request_count == 10


def test_engines_do_not_share_clients(built, server: FakeOpenAIServer):
    server.add_replies("a", "b")
    for _ in range(2):
        OpenAIEngine("gpt-4o-mini", base_url=server.url, api_key=SECRET).complete(
            make_request("x"))
    assert len(built) == 2


def test_a_cancelled_caller_cancels_its_call_on_the_shared_loop(server: FakeOpenAIServer):
    server.inject("hang", seconds=5)
    eng = OpenAIEngine("gpt-4o-mini", base_url=server.url, api_key=SECRET, timeout=30)

    async def caller() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(eng.acomplete(make_request("slow")), 0.3)

    asyncio.run(caller())
    loop = shared_loop().loop
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        pending = asyncio.run_coroutine_threadsafe(_pending(), loop).result(1)
        if pending == 0:
            break
        time.sleep(0.02)
    assert pending == 0  # the request on the shared loop was cancelled, not left running


async def _pending() -> int:
    me = asyncio.current_task()
    return sum(1 for t in asyncio.all_tasks() if t is not me and not t.done())


def test_a_shared_loop_runs_coroutines_from_threads_and_loops():
    sl = SharedLoop("test-loop")
    seen: list[int] = []

    async def where() -> int:
        seen.append(threading.get_ident())
        return 7

    try:
        assert sl.run(where()) == 7
        assert asyncio.run(sl.arun(where())) == 7
        assert len(set(seen)) == 1 and seen[0] != threading.get_ident()
    finally:
        sl.close()


def test_a_batch_keeps_its_connections_alive_for_the_next(server: FakeOpenAIServer,
                                                          monkeypatch: pytest.MonkeyPatch):
    from tracegrad.llm.http1 import Http1Transport

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    server.add_replies(*["ok"] * 48)
    eng = OpenAIEngine("gpt-4o-mini", base_url=server.url, api_key=SECRET, max_concurrency=24)
    with ThreadPoolExecutor(24) as pool:
        texts = list(pool.map(lambda i: eng.complete(make_request(f"q{i}")).text, range(24)))
        transport = eng._shared_client()._client._transport
        assert isinstance(transport, Http1Transport)
        opened = transport.opened
    with ThreadPoolExecutor(opened) as pool:  # no more in flight than there are connections
        texts += list(pool.map(lambda i: eng.complete(make_request(f"r{i}")).text, range(24)))
    assert texts == ["ok"] * 48
    assert 1 < opened <= 24  # the batch went out on several connections at once
    assert transport.opened == opened  # and the second batch reused them


def test_a_proxy_in_the_environment_keeps_httpx_own_transport(monkeypatch: pytest.MonkeyPatch):
    from tracegrad.llm.http1 import Http1Transport

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    eng = OpenAIEngine("gpt-4o-mini", base_url="https://api.example.invalid/v1", api_key=SECRET)
    assert not isinstance(eng._shared_client()._client._transport, Http1Transport)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork()")
def test_a_forked_child_gets_its_own_loop_and_client(server: FakeOpenAIServer):
    import os

    server.add_replies("parent", "child", "parent again")
    eng = OpenAIEngine("gpt-4o-mini", base_url=server.url, api_key=SECRET)
    assert eng.complete(make_request("a")).text == "parent"
    pid = os.fork()
    if pid == 0:  # the parent's loop thread does not exist here
        ok = eng.complete(make_request("b")).text == "child"
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert eng.complete(make_request("c")).text == "parent again"


def test_a_client_dropped_after_the_loop_began_closing_is_not_scheduled(
        monkeypatch: pytest.MonkeyPatch):
    """At exit the shared loop closes while engines are still being collected; a close
    queued then was dropped unrun ("coroutine 'AsyncAPIClient.close' was never awaited",
    seen in benchmarks/estimate_accuracy.py). Once close() began nothing is scheduled."""
    sl = shared_loop()
    loop = sl.loop
    made: list[str] = []

    class Client:
        def close(self):
            made.append("coroutine")

            async def closing() -> None:
                return None
            return closing()

    openai_mod._close_later(loop, Client())  # open loop: the close is scheduled and runs
    assert made == ["coroutine"]
    monkeypatch.setattr(sl, "_loop", None)  # what close() does first
    assert not sl.accepts(loop)
    openai_mod._close_later(loop, Client())
    assert made == ["coroutine"]


def test_a_stopped_loop_accepts_nothing():
    sl = SharedLoop()
    loop = sl.loop
    assert sl.accepts(loop)
    sl.close()
    assert not sl.accepts(loop)
