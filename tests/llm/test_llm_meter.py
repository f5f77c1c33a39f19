"""Meter, Budget and pricing: totals match the server, budgets stop calls before sending."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tracegrad.llm import Budget, BudgetExceeded, Meter, Usage, cost, set_pricing
from tracegrad.llm.base import make_request
from tracegrad.llm.pricing import is_priced, price_for
from tracegrad.testing import MockLLM


def test_usage_totals_equal_what_the_server_reported(server, make_llm):
    llm = make_llm("openai:gpt-4o-mini")
    for i in range(3):
        llm.chat(f"forward question number {i}" * (i + 1))
    for i in range(2):
        llm.chat(f"why was it wrong? {i}", purpose="backward")
    llm.chat("rewrite the prompt", purpose="optimizer")
    reported = [r["usage"] for r in server.responses]
    assert len(reported) == 6
    prompt = sum(u["prompt_tokens"] for u in reported)
    completion = sum(u["completion_tokens"] for u in reported)
    snap = llm.snapshot()
    total = snap["total"]
    assert (total["prompt_tokens"], total["completion_tokens"]) == (prompt, completion)
    assert total["calls"] == 6 and total["estimated_calls"] == 0
    assert total["usd"] == pytest.approx((prompt * 0.15 + completion * 0.60) / 1e6)
    assert snap["by_purpose"]["forward"]["calls"] == 3
    assert snap["by_purpose"]["backward"]["calls"] == 2
    assert snap["by_purpose"]["optimizer"]["calls"] == 1
    assert snap["by_purpose"]["judge"]["calls"] == 0
    assert snap["by_model"]["gpt-4o-mini"]["calls"] == 6
    json.dumps(snap)  # JSON-able


def test_async_calls_are_metered(server, make_llm):
    llm = make_llm()

    async def main():
        await asyncio.gather(*(llm.achat(f"q{i}", purpose="eval") for i in range(5)))

    asyncio.run(main())
    assert llm.snapshot()["by_purpose"]["eval"]["calls"] == 5


def test_call_budget_allows_exactly_n(server, make_llm):
    llm = make_llm(budget=Budget(calls=3))
    for i in range(3):
        llm.chat(f"q{i}")
    with pytest.raises(BudgetExceeded) as ei:
        llm.chat("one too many")
    assert server.request_count == 3  # refused before any HTTP request
    assert ei.value.kind == "calls"
    assert "not sent" in str(ei.value)


def test_call_budget_holds_under_concurrency(server, make_llm):
    llm = make_llm(budget=Budget(calls=5), max_concurrency=8)

    def call(i):
        try:
            llm.chat(f"q{i}")
            return "ok"
        except BudgetExceeded:
            return "refused"

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(call, range(20)))
    assert results.count("ok") == 5 and results.count("refused") == 15
    assert server.request_count == 5


def test_dollar_budget_uses_the_worst_case_before_sending(server, make_llm):
    llm = make_llm("gpt-4o", max_tokens=200)
    request = make_request("What is the capital of France?")
    worst_tokens, worst_usd = llm.worst_case(request)
    prompt_est = worst_tokens - 200
    assert worst_usd == pytest.approx((prompt_est * 2.5 + 200 * 10.0) / 1e6)
    # the real reply would fit, but the worst case does not: refused, nothing sent
    llm.budget = Budget(usd=worst_usd * 0.9)
    with pytest.raises(BudgetExceeded) as ei:
        llm.complete(request)
    assert ei.value.kind == "usd" and server.request_count == 0
    # room for the worst case: sent, and settled at the real (smaller) cost
    llm.budget = Budget(usd=worst_usd * 2.5)
    llm.complete(request)
    llm.complete(request)
    spent = llm.snapshot()["total"]["usd"]
    assert 0 < spent < worst_usd
    ok = 2
    with pytest.raises(BudgetExceeded):
        for _ in range(1000):
            llm.complete(request)
            ok += 1
    assert server.request_count == ok  # the refused call was never sent
    spent = llm.snapshot()["total"]["usd"]
    assert spent <= worst_usd * 2.5 < spent + worst_usd  # stopped exactly at the edge


def test_token_budget(server, make_llm):
    llm = make_llm(max_tokens=10, budget=Budget(tokens=40))
    n = 0
    with pytest.raises(BudgetExceeded) as ei:
        for i in range(20):
            llm.chat(f"q{i}")
            n += 1
    assert ei.value.kind == "tokens"
    assert server.request_count == n and n >= 1
    assert llm.snapshot()["total"]["total_tokens"] <= 40


def test_cache_hits_pass_a_spent_budget(server, make_llm, tmp_path):
    llm = make_llm(cache=tmp_path / "c.db", budget=Budget(calls=1))
    llm.chat("q")
    assert llm.chat("q").cached  # free, so allowed although the budget is spent
    with pytest.raises(BudgetExceeded):
        llm.chat("new question")
    assert server.request_count == 1


def test_budget_attached_later_and_remaining(server, make_llm):
    llm = make_llm()
    llm.chat("a")
    llm.chat("b")
    llm.budget = Budget(calls=3)
    assert llm.snapshot()["remaining"]["calls"] == 1
    llm.chat("c")
    with pytest.raises(BudgetExceeded):
        llm.chat("d")


def test_since_gives_per_step_usage(server, make_llm):
    llm = make_llm()
    llm.chat("before")
    mark = llm.snapshot()
    llm.chat("step", purpose="backward")
    llm.chat("step 2", purpose="backward")
    delta = llm.since(mark)
    assert delta["total"]["calls"] == 2
    assert delta["by_purpose"]["backward"]["calls"] == 2
    assert delta["by_purpose"]["forward"]["calls"] == 0
    assert delta["total"]["prompt_tokens"] == sum(
        r["usage"]["prompt_tokens"] for r in server.responses[1:]
    )


def test_engines_can_share_one_ledger():
    forward = Meter(MockLLM(model="gpt-4o-mini"), Budget(calls=3))
    optimizer = forward.wrap(MockLLM(model="gpt-4o"))
    forward.chat("a")
    optimizer.chat("b", purpose="optimizer")
    forward.chat("c")
    with pytest.raises(BudgetExceeded):
        optimizer.chat("d", purpose="optimizer")
    snap = forward.snapshot()
    assert snap == optimizer.snapshot()
    assert set(snap["by_model"]) == {"gpt-4o-mini", "gpt-4o"}


def test_errors_release_reservations():
    from tracegrad.llm import LLMError

    meter = Meter(MockLLM([LLMError("boom"), "ok"]), Budget(calls=1))
    with pytest.raises(LLMError, match="boom"):
        meter.chat("x")
    assert meter.chat("y").text == "ok"  # the failed call did not use the budget
    assert meter.snapshot()["total"]["errors"] == 1


def test_unknown_models_cost_nothing_and_are_flagged():
    meter = Meter(MockLLM(model="my-local-llama"))
    meter.chat("x")
    snap = meter.snapshot()
    assert snap["total"]["usd"] == 0.0
    assert snap["unpriced_models"] == ["my-local-llama"]
    meter.budget = Budget(usd=1.0)
    with pytest.warns(UserWarning, match="no price known"):
        meter.chat("y")


# -- pricing -------------------------------------------------------------------------


def test_pricing_table_and_dated_snapshots():
    u = Usage(1_000_000, 1_000_000)
    assert cost("gpt-4o", u) == pytest.approx(12.5)
    assert cost("gpt-4o-2024-08-06", u) == pytest.approx(12.5)
    assert cost("gpt-4o-mini-2024-07-18", u) == pytest.approx(0.75)
    assert cost("openai/gpt-4.1-nano", u) == pytest.approx(0.5)
    for m in ("gpt-4.1", "gpt-4.1-mini", "o3-mini", "o4-mini", "gpt-5", "gpt-5-mini", "gpt-5-nano"):
        assert is_priced(m), m
    assert not is_priced("llama3.1:8b") and cost("llama3.1:8b", u) == 0.0


def test_pricing_overrides(tmp_path, monkeypatch):
    set_pricing({"my-model": {"input": 1.0, "output": 2.0}})
    assert cost("my-model", Usage(1_000_000, 500_000)) == pytest.approx(2.0)
    set_pricing({"gpt-4o": [1.0, 1.0]})
    assert cost("gpt-4o", Usage(1_000_000, 0)) == pytest.approx(1.0)
    assert is_priced("my-model")  # merged, not replaced
    set_pricing(None)
    assert not is_priced("my-model")
    f = tmp_path / "prices.json"
    f.write_text(json.dumps({"team-model": {"input": 3, "output": 4}}))
    monkeypatch.setenv("TRACEGRAD_PRICING", str(f))
    assert price_for("team-model").output == 4.0
    assert price_for("gpt-4o").input == 2.5  # the packaged table still applies
