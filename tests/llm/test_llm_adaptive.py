"""The adaptive concurrency limit: halve on 429/503 (once per wave), grow after successes,
never above the ceiling."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tracegrad.llm import ConfigurationError, Limits, RetryableError
from tracegrad.llm.base import make_request
from tracegrad.llm.limits import AdaptiveLimit, HybridSemaphore
from tracegrad.testing import MockLLM


def limit(ceiling: int, start: int | None = None) -> AdaptiveLimit:
    return AdaptiveLimit(HybridSemaphore(ceiling), ceiling, start)


def test_starts_at_the_ceiling_unless_told():
    assert limit(32).value == 32
    assert limit(32, start=4).value == 4


def test_a_wave_of_refusals_halves_once():
    lim = limit(16)
    epoch = lim.started()  # 16 calls start together and all come back 429
    for _ in range(16):
        lim.refused(epoch, 429)
    assert (lim.value, lim.cuts) == (8, 1)
    lim.refused(lim.started(), 503)  # a call started after the cut: halves again
    assert (lim.value, lim.cuts) == (4, 2)


def test_other_errors_do_not_back_off():
    lim = limit(8)
    for status in (500, 502, 408, None):
        lim.refused(lim.started(), status)
    assert (lim.value, lim.cuts) == (8, 0)


def test_grows_by_one_per_window_of_successes_up_to_the_ceiling():
    lim = limit(6, start=4)
    for _ in range(3):
        lim.succeeded()
    assert lim.value == 4
    lim.succeeded()  # 4 successes at limit 4
    assert lim.value == 5
    for _ in range(5):
        lim.succeeded()
    assert lim.value == 6
    for _ in range(100):
        lim.succeeded()
    assert lim.value == 6  # the ceiling holds


def test_never_below_one():
    lim = limit(2)
    for _ in range(5):
        lim.refused(lim.started(), 429)
    assert lim.value == 1


def test_a_start_above_the_ceiling_is_refused():
    with pytest.raises(ConfigurationError, match="start_concurrency"):
        Limits(MockLLM(["x"]), max_concurrency=4, start_concurrency=8)


def test_lowering_the_limit_holds_new_calls_until_enough_finish():
    sem = HybridSemaphore(4)
    for _ in range(4):
        sem.acquire()
    sem.set_limit(2)
    got = threading.Event()
    t = threading.Thread(target=lambda: (sem.acquire(), got.set()))
    t.start()
    sem.release()  # 3 in flight, limit 2: still full
    assert not got.wait(0.1)
    sem.release()
    sem.release()  # 1 in flight: a slot is free
    assert got.wait(2)
    t.join()


def test_limits_back_off_on_429_and_keep_the_retries_under_the_new_limit():
    first_wave = threading.Barrier(8, timeout=5)
    lock = threading.Lock()
    seen = {"n": 0}

    def reply(request):
        with lock:
            seen["n"] += 1
            n = seen["n"]
        if n <= 8:
            first_wave.wait()  # all eight are in flight, then all are refused
            raise RetryableError("slow down", status=429, retry_after=0.05)
        time.sleep(0.02)
        return "ok"

    inner = MockLLM(reply)
    lim = Limits(inner, max_concurrency=8, backoff_base=0.001)
    with ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(lambda i: lim.complete(make_request(f"q{i}")).text, range(8)))
    assert texts == ["ok"] * 8
    assert lim.adaptive.cuts == 1 and lim.concurrency < 8
    assert lim.retries == 8


def test_the_ceiling_bounds_calls_in_flight_however_many_succeed():
    inner = MockLLM(default="ok", latency=0.01)
    lim = Limits(inner, max_concurrency=4)
    with ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda i: lim.complete(make_request(f"q{i}")), range(60)))
    assert 1 < inner.max_in_flight <= 4 and lim.concurrency == 4
