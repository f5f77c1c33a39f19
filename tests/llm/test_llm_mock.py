"""MockLLM and the in-flight counter it shares with FakeOpenAIServer."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tracegrad.llm.base import make_request
from tracegrad.llm.mock import InFlight, MockLLM


def test_in_flight_counts_the_peak_and_resets_it():
    counter = InFlight()
    with counter, counter:
        assert (counter.now, counter.peak) == (2, 2)
    assert (counter.now, counter.peak) == (0, 2)
    counter.reset_peak()
    assert counter.peak == 0


def test_in_flight_survives_concurrent_threads():
    counter, gate = InFlight(), threading.Barrier(4)

    def work() -> None:
        with counter:
            gate.wait(timeout=5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (counter.now, counter.peak) == (0, 4)


def test_mock_reports_concurrent_calls_and_reset_clears_the_peak():
    llm = MockLLM(latency=0.02)

    async def burst() -> None:
        await asyncio.gather(*(llm.acomplete(make_request(f"q{i}")) for i in range(3)))

    asyncio.run(burst())
    assert (llm.in_flight, llm.max_in_flight, llm.calls) == (0, 3, 3)
    llm.reset()
    assert (llm.max_in_flight, llm.calls) == (0, 0)


def test_a_failing_reply_still_leaves_the_count():
    llm = MockLLM([RuntimeError("boom")])
    with pytest.raises(RuntimeError, match="boom"):
        llm.complete(make_request("q"))
    assert (llm.in_flight, llm.max_in_flight) == (0, 1)
