"""Every wait on the server is bounded as a whole (issue 12, section 4).

Before: ``--timeout 2 --max-retries 0`` against a server that sends one byte per second
was still running at 150 s, because the timeout bounded the gap between bytes, not the
request. Now each attempt has a total deadline: a call ends within about
timeout x (retries + 1) plus backoff, with LLMTimeout.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tracegrad.llm import LLM, LLMTimeout, OpenAIEngine, RetryableError
from tracegrad.llm.base import make_request

from .hostile_server import HostileServer
from .reliability_harness import SECRET, cli_env, copy_counting, optimize_args, run_cli

TRICKLE = 0.2  # seconds per byte: the ~330-byte reply would take over a minute
TIMEOUT, RETRIES, BACKOFF = 1.0, 1, 0.05
BOUND = TIMEOUT * (RETRIES + 1) + BACKOFF * 1.5 + 1.0  # + slack for a loaded machine


def engine(server: HostileServer) -> object:
    return LLM("openai:gpt-4o-mini", base_url=server.url, api_key=SECRET, cache=False,
               timeout=TIMEOUT, max_retries=RETRIES, backoff_base=BACKOFF)


def test_a_trickling_server_cannot_hold_a_call_past_its_deadline() -> None:
    with HostileServer(trickle=TRICKLE) as s:
        llm = engine(s)
        t0 = time.monotonic()
        with pytest.raises(LLMTimeout) as ei:
            llm.chat("hi")
        took = time.monotonic() - t0
    assert isinstance(ei.value, RetryableError) and ei.value.attempts == RETRIES + 1
    assert len(s.requests) == RETRIES + 1
    assert TIMEOUT * (RETRIES + 1) * 0.9 <= took < BOUND, took
    assert "timed out" in str(ei.value) and "gave up after 2 attempts" in str(ei.value)


def test_a_trickling_server_cannot_hold_an_async_call_past_its_deadline() -> None:
    with HostileServer(trickle=TRICKLE) as s:
        llm = engine(s)
        t0 = time.monotonic()
        with pytest.raises(LLMTimeout):
            asyncio.run(llm.achat("hi"))
        took = time.monotonic() - t0
    assert len(s.requests) == RETRIES + 1
    assert took < BOUND, took


def test_the_connection_a_deadline_cut_is_not_reused_half_read() -> None:
    with HostileServer(trickle=TRICKLE) as s:
        eng = OpenAIEngine("gpt-4o-mini", base_url=s.url, api_key=SECRET, timeout=0.5)
        with pytest.raises(LLMTimeout):
            eng.complete(make_request("slow"))
        s.trickle = 0.0
        assert eng.complete(make_request("fast")).text == "fine"  # the pool is sound


def test_a_client_that_cannot_take_a_deadline_says_so() -> None:
    import httpx2

    http = httpx2.Client(transport=httpx2.MockTransport(lambda r: httpx2.Response(500)))
    eng = OpenAIEngine("gpt-4o-mini", base_url="http://127.0.0.1:9/v1", api_key=SECRET,
                       http_client=http)
    with pytest.warns(UserWarning, match="total deadline"):
        eng.client  # noqa: B018 - building the client is what warns


def test_cli_timeout_and_no_retries_stop_a_trickling_server_quickly(tmp_path: Path) -> None:
    task = copy_counting(tmp_path / "task")
    with HostileServer(trickle=TRICKLE) as s:
        args = optimize_args(task, s.url, tmp_path / "run", "--timeout", 1, "--max-retries", 0,
                             steps=1)
        r = run_cli(args, cli_env(tmp_path), timeout=1.0)
    assert r.code == 1 and "timed out" in r.stderr, r
    # the run was still going at 150 s; calls in flight end within their deadline
    assert r.seconds < 8, r


@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf"), "2", True])
def test_a_timeout_that_bounds_nothing_is_refused_before_sending(bad: object) -> None:
    from tracegrad.llm import ConfigurationError

    with HostileServer() as s:
        with pytest.raises(ConfigurationError, match="timeout"):
            OpenAIEngine("gpt-4o-mini", base_url=s.url, api_key=SECRET, timeout=bad)
        eng = OpenAIEngine("gpt-4o-mini", base_url=s.url, api_key=SECRET)
        with pytest.raises(ConfigurationError, match="timeout"):
            eng.complete(make_request("hi", timeout=bad))
    assert s.requests == []
