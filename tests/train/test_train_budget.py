from __future__ import annotations

import json

import pytest

from tracegrad.llm import Budget, Meter
from tracegrad.train import optimize

from .sim_task import QA, forward_llm, optimizer_llm, write_data


def metered():
    fw, op = forward_llm(), optimizer_llm()
    meter = Meter(fw)
    return fw, op, meter, meter.wrap(op)


def test_budget_stops_before_it_is_exceeded_and_keeps_the_best(tmp_path):
    train, val = write_data(tmp_path)
    fw, op, meter, op_meter = metered()
    for _ in range(5):  # spending before the run does not count against the run's budget
        meter.chat("What is 1 + 1?")
    spent_before = fw.calls
    model = QA(meter)
    res = optimize(
        model,
        train,
        val,
        metric="exact_match",
        optimizer_engine=op_meter,
        budget=Budget(calls=45),
        steps=8,
        batch_size=4,
        seed=3,
        run_dir=tmp_path / "run",
        progress=False,
        concurrency=4,
    )
    run_calls = fw.calls - spent_before + op.calls
    assert res.stopped_reason == "budget"
    assert run_calls <= 45 and res.usage["total"]["calls"] <= 45
    assert res.usage["total"]["calls"] == run_calls
    assert 0 < res.steps_done < 8
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["stopped_reason"] == "budget" and state["step"] == res.steps_done
    assert best["state"] == res.best_state and model.system.value == best["state"]["system"]
    assert res.best_score >= res.baseline_score and res.best_score > 0.25
    assert meter.budget is None  # the run's budget was lifted off the user's meter afterwards
    lines = (tmp_path / "run" / "history.jsonl").read_text().splitlines()
    assert len(lines) == res.steps_done

    # resuming with the same budget only spends what is left of it
    fw.reset()
    op.reset()
    res2 = optimize(
        QA(meter),
        train,
        val,
        metric="exact_match",
        optimizer_engine=op_meter,
        budget=Budget(calls=45),
        steps=8,
        batch_size=4,
        seed=3,
        resume=tmp_path / "run",
        progress=False,
        concurrency=4,
    )
    assert res2.stopped_reason == "budget"
    assert fw.calls + op.calls <= 45 - run_calls
    assert res2.usage["total"]["calls"] <= 45


def test_budget_in_dollars_and_as_a_number(tmp_path):
    from tracegrad.llm import set_pricing

    # $10 per million tokens: a call's worst case (about 1,050 tokens) is ~$0.0105,
    # what it really costs (~40 tokens) is ~$0.0004
    set_pricing(
        {
            "mock-forward": {"input": 10.0, "output": 10.0},
            "mock-optimizer": {"input": 10.0, "output": 10.0},
        }
    )
    try:
        train, val = write_data(tmp_path)
        fw, op, meter, op_meter = metered()
        res = optimize(
            QA(meter),
            train,
            val,
            metric="exact_match",
            optimizer_engine=op_meter,
            budget=0.02,
            steps=8,
            batch_size=4,
            run_dir=False,
            progress=False,
        )
        assert res.stopped_reason == "budget"
        assert 0.005 < res.usage["total"]["usd"] <= 0.02
    finally:
        set_pricing(None)


def test_budget_without_a_meter_is_refused_before_any_call(tmp_path):
    train, val = write_data(tmp_path)
    fw, op = forward_llm(), optimizer_llm()
    with pytest.raises(ValueError, match="metered"):
        optimize(
            QA(fw),
            train,
            val,
            metric="exact_match",
            optimizer_engine=op,
            budget=Budget(calls=10),
            run_dir=False,
            progress=False,
        )
    assert fw.calls == 0 and op.calls == 0


def test_usage_is_recorded_per_step(tmp_path):
    train, val = write_data(tmp_path)
    fw, op, meter, op_meter = metered()
    res = optimize(
        QA(meter),
        train,
        val,
        metric="exact_match",
        optimizer_engine=op_meter,
        steps=2,
        batch_size=4,
        run_dir=tmp_path / "run",
        progress=False,
    )
    per_step = [r["usage"]["total"]["calls"] for r in res.history]
    assert all(n > 0 for n in per_step)
    assert res.usage["total"]["calls"] == fw.calls + op.calls
    assert sum(per_step) + 8 == fw.calls + op.calls  # + the baseline's 8 validation calls
    assert sum(r["usage"]["by_purpose"]["optimizer"]["calls"] for r in res.history) == op.calls_for(
        "optimizer"
    )
