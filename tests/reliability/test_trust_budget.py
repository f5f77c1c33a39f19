"""A dollar budget cannot be overspent (issue 12, section 2).

Before: no ``max_tokens`` was sent while the meter reserved an assumed 1,024 reply tokens,
so a server returning 10 MB replies billed 1,200x the budget and the run exited 0. Now
every call carries the limit the meter reserved, and a server that reports more than it
was allowed stops the run at that call, with the spend recorded at the limit.
"""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tracegrad.llm import LLM, Budget, BudgetExceeded, ConfigurationError, UsageOverrun
from tracegrad.llm.base import (
    DEFAULT_COMPLETION_LIMITS,
    REASONING_LIMIT_FACTOR,
    estimate_tokens,
    make_request,
)

from .hostile_server import HostileServer, huge_reply
from .reliability_harness import SECRET, copy_counting

BUDGET = 0.01  # USD: the issue's `--budget-usd 0.01`


def metered(server: HostileServer, spec: str = "openai:gpt-4o-mini", **kw: Any) -> Any:
    kw.setdefault("cache", False)
    kw.setdefault("backoff_base", 0.001)
    return LLM(spec, base_url=server.url, api_key=SECRET, **kw)


def sent_limit(body: dict[str, Any]) -> int | None:
    return body.get("max_tokens", body.get("max_completion_tokens"))


# -- the limit is sent, and it is the reservation ---------------------------------------


@pytest.mark.parametrize("purpose", sorted(DEFAULT_COMPLETION_LIMITS))
def test_every_call_carries_the_limit_the_meter_reserved(purpose: str) -> None:
    with HostileServer() as s:
        llm = metered(s, budget=Budget(usd=1.0))
        request = make_request("How many legs has a dog?", purpose=purpose)
        tokens, _ = llm.worst_case(request)
        llm.complete(request)
    body = s.requests[0]
    assert body["max_tokens"] == DEFAULT_COMPLETION_LIMITS[purpose]
    assert body["max_tokens"] == llm.completion_limit(request)
    assert tokens == body["max_tokens"] + sum(
        estimate_tokens(m["content"]) + 4 for m in body["messages"])


def test_reasoning_models_get_max_completion_tokens_scaled_for_thinking() -> None:
    with HostileServer() as s:
        llm = metered(s, "openai:o4-mini")
        request = make_request("hi", purpose="judge")
        llm.complete(request)
    body = s.requests[0]
    assert "max_tokens" not in body
    assert body["max_completion_tokens"] == DEFAULT_COMPLETION_LIMITS["judge"] * \
        REASONING_LIMIT_FACTOR == llm.completion_limit(request)


def test_a_users_max_tokens_wins_and_is_what_gets_reserved() -> None:
    with HostileServer() as s:
        engine_wide = metered(s, max_tokens=55)
        per_purpose = metered(s, completion_limits={"optimizer": 3000})
        calls = [
            (engine_wide, make_request("a", purpose="optimizer"), 55),
            (engine_wide, make_request("b", max_tokens=77), 77),  # the request beats both
            (per_purpose, make_request("c", purpose="optimizer"), 3000),
            (per_purpose, make_request("d", purpose="forward"), 1024),
            (per_purpose, make_request("e", purpose="optimizer", max_completion_tokens=9), 9),
        ]
        for llm, request, want in calls:
            assert llm.completion_limit(request) == want
            llm.complete(request)
    assert [sent_limit(b) for b in s.requests] == [want for _, _, want in calls]


@pytest.mark.parametrize("bad", [-5, 0, 2.5, "hot", True])
def test_a_bad_max_tokens_is_refused_before_anything_is_sent(bad: Any) -> None:
    with HostileServer() as s:
        llm = metered(s)
        with pytest.raises(ConfigurationError, match="max_tokens"):
            llm.complete(make_request("hi", max_tokens=bad))
        with pytest.raises(ConfigurationError, match="max_tokens"):
            metered(s, max_tokens=bad)
        with pytest.raises(ConfigurationError, match="completion_limits"):
            metered(s, completion_limits={"forward": bad})
    assert s.requests == []


# -- a server that bills more than it was allowed -----------------------------------------


def test_huge_replies_stop_the_metered_engine_at_that_call_within_budget() -> None:
    with HostileServer(huge_reply(content_bytes=10_000_000)) as s:
        llm = metered(s, budget=Budget(usd=BUDGET))
        with pytest.raises(UsageOverrun) as ei:
            llm.chat("Count the fruits: an apple and two pears.")
        assert isinstance(ei.value, BudgetExceeded)  # what a run stops cleanly on
        assert s.requests[0]["max_tokens"] == 1024  # the server was told
    snap = llm.snapshot()
    assert snap["total"]["usd"] <= BUDGET  # was 12.0000096 USD in the run
    assert snap["total"]["completion_tokens"] == 1024  # counted at the limit
    assert snap["total"]["overruns"] == 1
    (record,) = snap["overruns"]
    assert record["reserved_completion_tokens"] == 1024
    assert record["reported_completion_tokens"] == 10_000_000
    msg = str(ei.value)
    assert "10,000,000 reply tokens" in msg and "limit of 1,024" in msg


def test_a_lie_about_prompt_tokens_is_caught_too() -> None:
    def reply(body: dict[str, Any]) -> tuple[str, dict[str, int]]:
        return "ok", {"prompt_tokens": 10_000_000, "completion_tokens": 1}

    with HostileServer(reply) as s:
        llm = metered(s, budget=Budget(usd=BUDGET))
        with pytest.raises(UsageOverrun, match="prompt tokens"):
            llm.chat("hello")
    assert llm.snapshot()["total"]["usd"] <= BUDGET


def test_without_usage_a_huge_reply_is_counted_at_the_limit() -> None:
    def reply(body: dict[str, Any]) -> tuple[str, None]:
        return "x" * 1_000_000, None

    with HostileServer(reply) as s:
        llm = metered(s, budget=Budget(usd=BUDGET))
        c = llm.chat("hello")  # the estimate is ours, not the server's claim: no stop
    assert c.usage.estimated
    total = llm.snapshot()["total"]
    assert total["completion_tokens"] == 1024 and total["usd"] <= BUDGET


def test_without_a_budget_an_overrun_is_recorded_and_warned_not_raised() -> None:
    with HostileServer(huge_reply(content_bytes=100)) as s:
        llm = metered(s)
        with pytest.warns(UserWarning, match="usage overrun"):
            assert llm.chat("hello").text == "x" * 100
    assert llm.snapshot()["total"]["overruns"] == 1


def test_the_call_log_marks_a_reply_over_its_limit(tmp_path: Path) -> None:
    with HostileServer(huge_reply(content_bytes=100)) as s:
        llm = metered(s, budget=Budget(usd=BUDGET), call_log=tmp_path / "calls.jsonl")
        with pytest.raises(UsageOverrun):
            llm.chat("hello")
    (entry,) = [json.loads(x) for x in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert entry["response"]["completion_limit"] == 1024
    assert entry["response"]["over_limit"] is True


# -- concurrency: reservations, not hopes --------------------------------------------------


def _full_allowance(body: dict[str, Any]) -> tuple[str, dict[str, int]]:
    """An honest server that uses every reply token it is allowed."""
    return "y", {"prompt_tokens": 0, "completion_tokens": int(sent_limit(body) or 0)}


def test_concurrent_threads_cannot_overspend_a_dollar_budget() -> None:
    with HostileServer(_full_allowance) as s:
        llm = metered(s, max_concurrency=16)
        one = llm.worst_case(make_request("question 00"))[1]
        llm.budget = Budget(usd=5.5 * one)  # room for five calls, not six
        barrier = threading.Barrier(20)

        def call(i: int) -> str:
            barrier.wait()  # all threads reserve at the same moment
            try:
                llm.chat(f"question {i:02d}")
                return "ok"
            except BudgetExceeded:
                return "refused"

        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(call, range(20)))
    assert results.count("ok") == 5 and len(s.requests) == 5
    assert llm.snapshot()["total"]["usd"] <= 5.5 * one


def test_concurrent_tasks_cannot_overspend_a_dollar_budget() -> None:
    with HostileServer(_full_allowance) as s:
        llm = metered(s, max_concurrency=16)
        one = llm.worst_case(make_request("question 00"))[1]
        llm.budget = Budget(usd=3.5 * one)

        async def main() -> list[Any]:
            calls = (llm.achat(f"question {i:02d}") for i in range(12))
            return await asyncio.gather(*calls, return_exceptions=True)

        results = asyncio.run(main())
    assert sum(not isinstance(r, BaseException) for r in results) == 3
    assert all(isinstance(r, BudgetExceeded) for r in results if isinstance(r, BaseException))
    assert len(s.requests) == 3 and llm.snapshot()["total"]["usd"] <= 3.5 * one


# -- a whole run -----------------------------------------------------------------------------


def _world_then_huge(honest: int) -> Any:
    """The counting world's replies for the first ``honest`` requests, then 10 MB ones
    that claim 10,000,000 reply tokens."""
    from tracegrad.demo import CountingWorld

    world, lock, seen = CountingWorld(), threading.Lock(), [0]
    huge = huge_reply(content_bytes=10_000_000)

    def reply(body: dict[str, Any]) -> tuple[str, dict[str, int] | None]:
        with lock:
            seen[0] += 1
            n = seen[0]
        if n > honest:
            return huge(body)
        text = world.http_reply(body)
        return text, {"prompt_tokens": 50, "completion_tokens": estimate_tokens(text)}

    return reply


def _optimize(task: dict[str, Path], engine: Any, run_dir: Path, resume: bool = False) -> Any:
    from tracegrad.promptfile import PromptFile
    from tracegrad.train import optimize

    pf = PromptFile.load(task["prompt"])
    return optimize(pf.to_module(engine), pf.load_dataset(task["train"]),
                    pf.load_dataset(task["val"]), metric=pf.metric_fn(judge_engine=engine),
                    optimizer="tgd", steps=2, batch_size=3, engine=engine,
                    optimizer_engine=engine, run_dir=run_dir,
                    resume=run_dir if resume else None, concurrency=4, progress=False,
                    budget=Budget(usd=BUDGET))


def test_a_huge_reply_server_stops_optimize_at_once_within_budget(tmp_path: Path) -> None:
    task = copy_counting(tmp_path / "task")
    run_dir = tmp_path / "run"
    with HostileServer(_world_then_huge(honest=8)) as s:
        engine = metered(s)
        result = _optimize(task, engine, run_dir)
        sent = len(s.requests)
    assert result.stopped_reason == "usage_overrun"  # a clean stop, named for its cause
    snap = engine.snapshot()
    assert snap["total"]["usd"] <= BUDGET
    assert snap["overruns"] and snap["overruns"][0]["reported_completion_tokens"] == 10_000_000
    assert sent <= 8 + 4  # stopped at the first lie: at most the calls already in flight
    assert all(sent_limit(b) for b in s.requests)  # every call told the server its limit
    state = json.loads((run_dir / "state.json").read_text())
    assert state["stopped_reason"] == "usage_overrun"
    # the run resumes once the server is honest again
    with HostileServer(_world_then_huge(honest=10**9)) as honest:
        resumed = _optimize(task, metered(honest), run_dir, resume=True)
    assert resumed.stopped_reason in ("steps", "perfect")
