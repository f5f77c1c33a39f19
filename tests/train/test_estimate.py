"""The cost estimate counts the calls each optimizer declares, so it cannot drift from them."""

from __future__ import annotations

import pytest

import tracegrad as tg
from tracegrad.optim.registry import calls_per_step
from tracegrad.train.estimate import BACKWARD_REPLY_TOKENS, TaskShape, estimate_run, nice_ceiling


def _shape(n_train: int = 20, n_val: int = 10, prompt: int = 300, reply: int = 20) -> TaskShape:
    return TaskShape(train=[(prompt, reply)] * n_train, val=[(prompt, reply)] * n_val,
                     template_tokens=120, constraints=2)


def _calls(est: dict, purpose: str) -> int:
    return sum(r["calls"] for r in est["rows"] if r["purpose"] == purpose)


@pytest.mark.parametrize("optimizer", ["tgd", "tgd-batched", "trace", "opro"])
def test_meta_calls_are_the_optimizers_declaration_times_steps(optimizer: str) -> None:
    task = _shape()
    est = estimate_run(task, optimizer=optimizer, steps=5, batch_size=4, model="openai:gpt-4o-mini",
                       optimizer_model="openai:gpt-4o", accuracy=0.0, improves=0.0)
    per = calls_per_step(optimizer, 1, 4, 4, feedback_chars=4 * BACKWARD_REPLY_TOKENS,
                         example_chars=4 * 320)
    assert est["calls_per_step"] == per
    assert _calls(est, "backward") == 5 * per["backward"]
    assert _calls(est, "optimizer") == 5 * per["optimizer"]
    assert _calls(est, "summary") == 5 * per["summary"]
    assert _calls(est, "forward") == 20 and _calls(est, "baseline") == 10
    assert _calls(est, "validation") == 5 * 10
    assert est["total"]["calls"] == sum(r["calls"] for r in est["rows"])


def test_feedback_over_budget_costs_a_summary_call_only_when_condense_is_summary() -> None:
    """A batch of 16 failures is over TGD's budget: the default cut makes no call, and
    ``condense="summary"`` pays one per parameter per step (the estimate once left it out)."""
    est = estimate_run(_shape(n_train=32), optimizer="tgd", steps=3, batch_size=16,
                       model="openai:gpt-4o-mini", optimizer_model="openai:gpt-4o-mini",
                       accuracy=0.0, improves=0.0)
    assert _calls(est, "summary") == est["calls_per_step"]["summary"] == 0
    for cls in (tg.TGD, tg.TraceOptimizer):
        p = tg.Parameter("x", name="p")
        assert cls([p], condense="summary").calls_per_step(1, 64, 64, feedback_chars=400)["summary"] == 1
        assert cls([p]).calls_per_step(1, 64, 64, feedback_chars=400)["summary"] == 0


def test_beam_multiplies_proposals_and_their_validation_not_backward() -> None:
    one = estimate_run(_shape(), optimizer="tgd", steps=2, batch_size=4, model="m",
                       optimizer_model="m", accuracy=0.0, improves=0.0)
    three = estimate_run(_shape(), optimizer="tgd", steps=2, batch_size=4, model="m",
                         optimizer_model="m", beam=3, accuracy=0.0, improves=0.0)
    assert _calls(three, "optimizer") == 3 * _calls(one, "optimizer")
    assert _calls(three, "validation") == 3 * _calls(one, "validation")
    assert _calls(three, "backward") == _calls(one, "backward")


def test_no_validation_set_scores_candidates_on_the_batch() -> None:
    est = estimate_run(_shape(n_val=0), optimizer="trace", steps=4, batch_size=3, model="m",
                       optimizer_model="m", accuracy=0.0, improves=0.0)
    assert _calls(est, "baseline") == 0 and _calls(est, "validation") == 4 * 3
    assert any("makes no backward calls" in n for n in est["notes"])


def test_upper_bound_covers_the_declared_repairs() -> None:
    est = estimate_run(_shape(), optimizer="trace", steps=4, batch_size=4,
                       model="openai:gpt-4o-mini", optimizer_model="openai:gpt-4o-mini")
    assert est["upper_usd"] > est["total"]["usd"] > 0
    assert est["suggested_budget_usd"] >= est["upper_usd"]


@pytest.mark.parametrize(("x", "want"), [(0, 0.01), (0.013, 0.02), (1.3, 2), (13, 20), (5, 5)])
def test_nice_ceiling(x: float, want: float) -> None:
    assert nice_ceiling(x) == want


def test_batch_eval_prices_baseline_and_validation_at_half_and_nothing_else() -> None:
    kw = dict(optimizer="tgd", steps=3, batch_size=4, model="openai:gpt-4o-mini",
              optimizer_model="openai:gpt-4o")
    live = estimate_run(_shape(), **kw)
    batch = estimate_run(_shape(), **kw, batch_eval=True)
    for a, b in zip(live["rows"], batch["rows"], strict=True):
        assert a["calls"] == b["calls"] and a["prompt_tokens"] == b["prompt_tokens"]
        half = a["purpose"] in ("baseline", "validation")
        assert b["usd"] == pytest.approx(a["usd"] / 2 if half else a["usd"])
    assert batch["total"]["usd"] < live["total"]["usd"]
    assert any("Batch API prices" in n for n in batch["notes"])
