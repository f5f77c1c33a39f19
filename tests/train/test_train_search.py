"""``reflect``: evidence in the request, no backward calls, Pareto search that keeps
specialists, merge, proposals that differ, a metric-call budget."""

from __future__ import annotations

import random

import pytest

import tracegrad as tg
from tracegrad.core.feedback import Evidence, render_evidence
from tracegrad.optim.registry import search_defaults
from tracegrad.testing import MockLLM
from tracegrad.train import Trainer, optimize
from tracegrad.train.gate import needs_validation
from tracegrad.train.pool import Pool, candidate
from tracegrad.train.search import propose_merge

from .sim_task import QA, RULES, forward_llm, optimizer_llm, write_data


def _run(tmp_path, optimizer="reflect", **kw):
    train, val = write_data(tmp_path)
    fw, op = forward_llm(), optimizer_llm()
    res = optimize(QA(fw), train, val, metric="exact_match", optimizer=optimizer,
                   optimizer_engine=op, run_dir=False, progress=False, seed=1,
                   **{"steps": 4, "batch_size": 4, **kw})
    return res, fw, op


@pytest.mark.parametrize("optimizer", ["reflect", "reflect-lean"])
def test_the_update_request_shows_the_failing_examples_and_critiques_unless_lean(tmp_path,
                                                                                optimizer):
    res, _, op = _run(tmp_path, optimizer)
    lean = optimizer == "reflect-lean"
    assert (op.calls_for("backward") == 0) is lean
    updates = [r for r in op.requests if r.purpose == "optimizer"]
    assert updates, res.history
    text = updates[0].messages[-1]["content"]
    table = text.split("## What the examples of this step show", 1)[1]
    assert "### Failing example 1" in table
    assert "input: " in table and "expected: " in table and "got: " in table
    assert "examples failed." in table
    critiques = text.split("## Feedback on the current value", 1)[1].split("## What the", 1)[0]
    # a backward model's critique beside the table, or the metric's own words passed along
    assert "<feedback" in critiques and ('from="aggregate' in critiques) is lean
    assert res.best_score > res.baseline_score


def test_reflect_runs_with_its_search_settings_unless_told_otherwise(tmp_path):
    train, _ = write_data(tmp_path)
    t = Trainer(QA(forward_llm()), train, metric="exact_match", optimizer="reflect",
                optimizer_engine=optimizer_llm(), run_dir=False)
    assert (t.opts.pareto, t.opts.beam, t.opts.merge, t.opts.gate) == (
        False, 2, True, "minibatch-improve")
    t = Trainer(QA(forward_llm()), train, metric="exact_match", optimizer="reflect",
                optimizer_engine=optimizer_llm(), run_dir=False, beam=1, pareto=True)
    assert (t.opts.pareto, t.opts.beam) == (True, 1)
    assert search_defaults("tgd") == {} and search_defaults(tg.Reflect)["merge"] is True


def test_minibatch_improve_pays_for_validation_only_after_a_strict_gain():
    assert not needs_validation("minibatch-improve", 0.5, 0.5)
    assert needs_validation("minibatch-improve", 0.5, 0.75)
    assert needs_validation("minibatch", 0.5, 0.5)


def test_the_pareto_pool_keeps_a_specialist_a_mean_trim_would_drop():
    entries = [
        candidate("c0", 0, None, {"p": "a"}, 0.6, {"x": 0.6, "y": 0.6, "z": 0.6}),
        candidate("c1", 1, "c0", {"p": "b"}, 0.7, {"x": 0.7, "y": 0.7, "z": 0.7}),
    ]
    specialist = candidate("c2", 2, "c0", {"p": "c"}, 0.34, {"x": 1.0, "y": 0.0, "z": 0.0})
    for keep_front, kept in ((False, False), (True, True)):
        pool = Pool(2, [dict(e) for e in entries], current_id="c1", keep_front=keep_front)
        pool.add(dict(specialist))
        pool.add(candidate("c3", 3, "c1", {"p": "d"}, 0.72, {"x": 0.72, "y": 0.72, "z": 0.72}))
        assert any(e["id"] == "c2" for e in pool.entries) is kept


def test_a_losing_candidate_that_wins_an_example_joins_the_front():
    pool = Pool(3, [candidate("c0", 0, None, {"p": "a"}, 0.7, {"x": 0.7, "y": 0.7})],
                keep_front=True)
    assert pool.offer(candidate("c1", 1, "c0", {"p": "b"}, 0.5, {"x": 1.0, "y": 0.0}))
    assert not pool.offer(candidate("c2", 2, "c0", {"p": "c"}, 0.2, {"x": 0.2, "y": 0.2}))
    assert not pool.offer(candidate("c3", 3, "c0", {"p": "b"}, 0.5, {"x": 1.0, "y": 0.0}))


def _specialists(state_a, state_b):
    return Pool(4, [
        candidate("c0", 0, None, {"s": "base", "t": "base"}, 0.0, {"x": 0.0, "y": 0.0}),
        candidate("c1", 1, "c0", state_a, 0.5, {"x": 1.0, "y": 0.0}),
        candidate("c2", 2, "c0", state_b, 0.5, {"x": 0.0, "y": 1.0}),
    ], current_id="c1", keep_front=True)


def test_a_merge_takes_each_parameter_from_the_specialist_that_changed_it():
    pool = _specialists({"s": "rule A", "t": "base"}, {"s": "base", "t": "rule B"})
    res, state, cand = propose_merge(pool, object(), {}, {"s": "base", "t": "base"}, 3,
                                     set(), {e["hash"] for e in pool.entries},
                                     random.Random(0))
    assert state == {"s": "rule A", "t": "rule B"} and res.calls == 0
    assert cand["id"] == "c3.m" and {"c1", "c2"} <= set(res.events[-1]["from"])


def test_a_merge_of_one_changed_parameter_asks_the_optimizer():
    p = tg.Parameter("base", name="s")
    seen = []

    def reply(request):
        seen.append(request.messages[-1]["content"])
        return "<new_value>\nrule A\nrule B\n</new_value>"

    opt = tg.Reflect([p], engine=MockLLM(reply))
    pool = _specialists({"s": "rule A"}, {"s": "rule B"})
    tried: set = set()
    res, state, _ = propose_merge(pool, opt, {"s": p}, {"s": "base"}, 3, tried,
                                  {e["hash"] for e in pool.entries}, random.Random(0))
    assert state == {"s": "rule A\nrule B"} and res.calls == 1
    assert "<version_a>\nrule A\n</version_a>" in seen[0] and "rule B" in seen[0]
    assert "better of the two on 1 validation examples" in seen[0]
    # the same pair is not merged twice
    assert propose_merge(pool, opt, {"s": p}, {"s": "base"}, 4, tried,
                         {e["hash"] for e in pool.entries}, random.Random(0)) is None


def test_proposals_of_one_step_lead_with_different_problems():
    rows = [Evidence({"q": f"a{i}"}, "1", "one", 0.0, "number words") for i in range(3)]
    rows += [Evidence({"q": "b"}, "x", "y", 0.0, "wrong label")]
    first = render_evidence(rows).split("### Failing example 1", 1)[1][:60]
    second = render_evidence(rows, offset=1).split("### Failing example 1", 1)[1][:60]
    assert "a0" in first and '"b"' in second


def test_max_metric_calls_stops_the_run(tmp_path):
    res, _, _ = _run(tmp_path, steps=20, max_metric_calls=30)
    assert res.stopped_reason in ("metric_calls", "perfect")
    if res.stopped_reason == "metric_calls":
        assert res.steps_done < 20


@pytest.mark.parametrize("bad", [0, -3, 1.5])
def test_max_metric_calls_must_be_a_positive_integer(tmp_path, bad):
    train, _ = write_data(tmp_path)
    with pytest.raises(ValueError, match="max_metric_calls"):
        Trainer(QA(forward_llm()), train, metric="exact_match", optimizer_engine=optimizer_llm(),
                run_dir=False, max_metric_calls=bad)


def test_rules_reach_the_prompt(tmp_path):
    res, _, _ = _run(tmp_path, steps=6)
    best = res.best_state["system"]
    assert sum(rule in best for _, rule in RULES.values()) >= 2, best


def test_the_task_reaches_the_update_request_when_asked(tmp_path):
    train, val = write_data(tmp_path)
    for task, want in ((None, None), ("auto", "system prompt of the question"),
                       ("Answer quiz questions tersely.", "Answer quiz questions tersely.")):
        op = optimizer_llm()

        class Quiz(QA):
            """Answers quiz questions."""

        optimize(Quiz(forward_llm()), train, val, metric="exact_match", optimizer_engine=op,
                 run_dir=False, progress=False, steps=1, batch_size=4, task=task)
        text = next(r for r in op.requests if r.purpose == "optimizer").messages[-1]["content"]
        if want is None:
            assert "## The task" not in text
        else:
            head = text.split("## The task\n", 1)[1].split("\n## ", 1)[0]
            assert (want if task != "auto" else "Answers quiz questions.") in head


def test_an_example_every_candidate_gets_right_is_no_win_for_anyone():
    from tracegrad.train.pool import _wins
    shared = {f"s{i}": 1.0 for i in range(8)}
    a = candidate("c1", 1, None, {"p": "a"}, 0.9, {**shared, "x": 1.0, "y": 0.0})
    b = candidate("c2", 2, None, {"p": "b"}, 0.9, {**shared, "x": 0.0, "y": 1.0})
    c = candidate("c3", 3, None, {"p": "c"}, 0.8, {**shared, "x": 0.0, "y": 0.0})
    # eight examples all three get right would give each 8+ "wins" and equal weight
    assert _wins([a, b, c]) == {"c1": 1, "c2": 1, "c3": 1}
    d = candidate("c4", 4, None, {"p": "d"}, 1.0, {**shared, "x": 1.0, "y": 1.0})
    assert _wins([a, b, d]) == {"c1": 1, "c2": 1, "c4": 2}
