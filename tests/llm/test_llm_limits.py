"""Limits: retries with backoff, concurrency across threads and tasks, rate windows."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tracegrad.llm import Limits, LLMError, RetryableError, find_engine
from tracegrad.llm.base import make_request
from tracegrad.llm.limits import HybridSemaphore, RateWindow
from tracegrad.testing import FakeOpenAIServer, MockLLM


def test_recovers_from_two_rate_limits(server, make_llm):
    server.add_replies("finally")
    server.inject("429", times=2)
    llm = make_llm()
    c = llm.chat("hi")
    assert c.text == "finally"
    assert server.request_count == 3
    assert find_engine(llm, Limits).retries == 2


def test_permanent_server_error_gives_one_clear_error(server, make_llm):
    server.inject("500", times=50)
    llm = make_llm(max_retries=3)
    with pytest.raises(RetryableError) as ei:
        llm.chat("hi")
    assert server.request_count == 4  # the first try and exactly three retries
    msg = str(ei.value)
    assert "gave up after 4 attempts" in msg and "status 500" in msg
    assert ei.value.attempts == 4
    assert llm.snapshot()["total"]["errors"] == 1


def test_async_retries_count_the_same(server, make_llm):
    server.inject("503", times=50)
    llm = make_llm(max_retries=2)
    with pytest.raises(RetryableError):
        asyncio.run(llm.achat("hi"))
    assert server.request_count == 3


def test_retry_after_is_honoured():
    inner = MockLLM([RetryableError("slow down", status=429, retry_after=0.2), "ok"])
    lim = Limits(inner, backoff_base=0.0001)
    t0 = time.perf_counter()
    assert lim.complete(make_request("x")).text == "ok"
    assert time.perf_counter() - t0 >= 0.19


def test_backoff_grows_and_is_capped():
    lim = Limits(MockLLM(), backoff_base=1.0, backoff_max=5.0)
    err = RetryableError("x")
    delays = [lim.delay(n, err) for n in range(6)]
    assert 0.5 <= delays[0] < 1.5
    assert 2.0 <= delays[2] < 6.0
    assert delays[5] == 5.0


def test_non_retryable_errors_are_not_retried():
    inner = MockLLM([LLMError("bad request"), "never"])
    with pytest.raises(LLMError, match="bad request"):
        Limits(inner, backoff_base=0.0001).complete(make_request("x"))
    assert inner.calls == 1


def test_concurrency_limit_holds_for_threads():
    with FakeOpenAIServer(latency=0.05) as s:
        from tracegrad.llm import LLM

        llm = LLM("m", base_url=s.url, max_concurrency=4, cache=False)
        with ThreadPoolExecutor(20) as pool:
            replies = list(pool.map(lambda i: llm.chat(f"q{i}").text, range(20)))
        assert replies == ["fake reply"] * 20
        assert s.request_count == 20
        assert 1 < s.max_in_flight <= 4


def test_concurrency_limit_holds_for_asyncio_tasks():
    with FakeOpenAIServer(latency=0.05) as s:
        from tracegrad.llm import LLM

        llm = LLM("m", base_url=s.url, max_concurrency=4, cache=False)

        async def main():
            return await asyncio.gather(*(llm.achat(f"q{i}") for i in range(20)))

        assert len(asyncio.run(main())) == 20
        assert s.request_count == 20
        assert 1 < s.max_in_flight <= 4


def test_concurrency_limit_holds_for_threads_and_tasks_together():
    inner = MockLLM(latency=0.03)
    lim = Limits(inner, max_concurrency=3)

    async def tasks():
        await asyncio.gather(*(lim.acomplete(make_request(f"a{i}")) for i in range(10)))

    t = threading.Thread(target=lambda: asyncio.run(tasks()))
    t.start()
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda i: lim.complete(make_request(f"t{i}")), range(10)))
    t.join()
    assert inner.calls == 20
    assert 1 < inner.max_in_flight <= 3
    assert lim.max_concurrency == 3


def test_sync_only_engine_does_not_deadlock_async_callers():
    class SyncOnly(MockLLM):
        async def acomplete(self, request):
            return await asyncio.to_thread(self.complete, request)

    inner = SyncOnly(latency=0.01)
    lim = Limits(inner, max_concurrency=2)

    async def main():
        await asyncio.wait_for(
            asyncio.gather(*(lim.acomplete(make_request(str(i))) for i in range(40))), 10
        )

    asyncio.run(main())
    assert inner.calls == 40 and inner.max_in_flight <= 2


def test_cancelled_waiters_do_not_leak_slots():
    sem = HybridSemaphore(1)

    async def main():
        await sem.aacquire()
        waiter = asyncio.create_task(sem.aacquire())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        sem.release()
        await asyncio.wait_for(sem.aacquire(), 1)  # the slot is free again
        sem.release()

    asyncio.run(main())
    sem.acquire()  # and usable from a thread
    sem.release()


def test_rate_window_waits_for_old_requests_to_expire():
    w = RateWindow(3, period=0.2)
    assert [w.reserve(1)[0] for _ in range(3)] == [0.0, 0.0, 0.0]
    wait, entry = w.reserve(1)
    assert entry is None and 0 < wait <= 0.2
    time.sleep(wait + 0.01)
    assert w.reserve(1)[0] == 0.0


def test_token_window_is_settled_with_real_usage():
    w = RateWindow(100, period=10)
    _, entry = w.reserve(90)
    assert w.reserve(20)[0] > 0
    w.settle(entry, 10)  # the call used far less than estimated
    assert w.reserve(20)[0] == 0.0


def test_requests_per_minute_spaces_out_calls():
    inner = MockLLM()
    lim = Limits(inner, rpm=1000)
    lim.rpm = RateWindow(2, period=0.15)
    t0 = time.perf_counter()
    for i in range(4):
        lim.complete(make_request(str(i)))
    assert inner.calls == 4
    assert time.perf_counter() - t0 >= 0.14  # the third call waited for the window


def test_tokens_per_minute_holds_back_large_requests():
    inner = MockLLM()
    lim = Limits(inner, tpm=1_000_000)
    lim.tpm = RateWindow(50, period=0.15)
    t0 = time.perf_counter()
    for i in range(2):
        lim.complete(make_request(f"question {i}", max_tokens=40))  # ~47 booked, ~10 used
    assert inner.calls == 2
    assert time.perf_counter() - t0 >= 0.14  # the second waited for the first to expire
