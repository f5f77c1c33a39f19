"""A proposal's validation stops once it can no longer pass the gate: fewer metric calls,
the same verdict as full scoring."""

from __future__ import annotations

import random

import pytest

from tracegrad.optim import Optimizer
from tracegrad.train import optimize
from tracegrad.train.data import Example
from tracegrad.train.evaluate import ScoreCache
from tracegrad.train.results import Outcome

from .sim_task import BAD, QA, RULES, forward_llm, optimizer_llm, rows, write_data


class TableRunner:
    """Scores from a table: example id -> score; counts what it was asked to run."""

    def __init__(self, table: dict[str, float]) -> None:
        self.table, self.calls, self.runs = table, 0, []

    def run(self, examples, grad, split=None):
        self.calls += len(examples)
        self.runs.append([ex.id for ex in examples])
        return [Outcome(ex, self.table[ex.id], "") for ex in examples]


def _examples(n: int) -> list[Example]:
    return [Example({"q": str(i)}, "a", f"e{i}") for i in range(n)]


def test_a_proposal_that_fixes_nothing_stops_at_its_first_new_loss():
    examples = _examples(10)
    parent = {ex.id: (0.0 if i < 2 else 1.0) for i, ex in enumerate(examples)}  # 0.8
    cand = {ex.id: (0.0 if i in (0, 1, 4) else 1.0) for i, ex in enumerate(examples)}
    runner = TableRunner(cand)
    mean, scores, _, stopped = ScoreCache(runner).score_against(
        "val", examples, {"p": "x"}, parent, 0.8, False, 1)
    assert stopped
    # the parent's two failures first (no gain there), then e2, e3, e4: the loss at e4
    # cannot be made up by the five examples left
    assert runner.runs[:2] == [["e0"], ["e1"]] and runner.calls == 5
    assert set(scores) == {"e0", "e1", "e2", "e3", "e4"}
    assert mean == pytest.approx(0.7) and mean < 0.8


def test_the_verdict_is_the_one_full_scoring_gives():
    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(1, 12)
        examples = _examples(n)
        parent = {ex.id: rng.choice([0.0, 0.5, 1.0, 1.0]) for ex in examples}
        cand = {ex.id: rng.choice([0.0, 0.5, 1.0, 1.0]) for ex in examples}
        floor = sum(parent.values()) / n
        strict, chunk = rng.random() < 0.5, rng.randint(1, 5)
        full = sum(cand.values()) / n
        passes = full > floor if strict else full >= floor
        runner = TableRunner(cand)
        mean, scores, _, stopped = ScoreCache(runner).score_against(
            "val", examples, {"p": "x"}, parent, floor, strict, chunk)
        if stopped:
            assert not passes
            assert mean >= full - 1e-9 and runner.calls < n  # an upper bound, and cheaper
            assert not (mean > floor if strict else mean >= floor - 1e-9)
        else:
            assert mean == pytest.approx(full) and len(scores) == n and runner.calls == n
            assert list(scores) == [ex.id for ex in examples]  # in the examples' order


def _run(tmp_path, **kw):
    train, val = write_data(tmp_path)
    fw = forward_llm()
    model = QA(fw)
    res = optimize(model, train, val, optimizer=Breaker(model.parameters()), metric="exact_match", optimizer_engine=optimizer_llm(),
                   steps=1, batch_size=4, seed=3, run_dir=False, progress=False,
                   **{"concurrency": 1, **kw})
    val_questions = {r["question"] for r in rows(2, offset=10)}
    bad_on_val = sum(1 for r in fw.requests if BAD in r.messages[0]["content"]
                     and r.messages[-1]["content"] in val_questions)
    return res, bad_on_val


class Breaker(Optimizer):
    """Proposes the instruction that breaks every answer."""

    def step(self):
        result = self._new_result()
        self._apply(result, {n: p.value + " " + BAD for n, p in self.names.items()}, {})
        return result


def test_the_trainer_stops_a_failing_validation_and_says_so(tmp_path):
    res, bad_on_val = _run(tmp_path)
    rec = res.history[0]
    assert rec["result"] == "reverted"
    assert "at most" in rec["reason"] and "of 8 examples" in rec["reason"]
    # baseline 0.25 (2 of 8); the breaking proposal scores 0 everywhere, so after 7
    # examples even a correct eighth could not bring it to 2 of 8
    assert bad_on_val == 7 and rec["val_score"] == pytest.approx(1 / 8)


@pytest.mark.parametrize("kw", [{"pareto": True}, {"gate": "none"}])
def test_validation_runs_in_full_where_every_score_is_kept(tmp_path, kw):
    _, bad_on_val = _run(tmp_path, **kw)
    assert bad_on_val == 8


class TwoProposals(Optimizer):
    """Proposal 0 states every rule; proposal 1 adds the breaking instruction."""

    def step(self, sample_id=None):
        result = self._new_result()
        j = int((sample_id or "0").rsplit(":", 1)[-1])
        extra = " ".join(rule for _, rule in RULES.values()) if j == 0 else BAD
        self._apply(result, {n: p.value + " " + extra for n, p in self.names.items()}, {})
        return result


def test_a_later_proposal_stops_once_it_cannot_beat_the_best_so_far(tmp_path):
    train, val = write_data(tmp_path)
    fw = forward_llm()
    model = QA(fw)
    res = optimize(model, train, val, metric="exact_match", optimizer=TwoProposals(
        model.parameters()), optimizer_engine=optimizer_llm(), steps=1, batch_size=4, seed=3,
        beam=2, run_dir=False, progress=False, concurrency=1)
    rec = res.history[0]
    assert rec["result"] == "accepted" and res.best_score == 1.0
    first, second = rec["beam"]
    assert first["val"] == 1.0 and "val_stopped_after" not in first
    # nothing can score above 1.0: one example shows the second cannot be picked
    assert second["val_stopped_after"] == 1
    val_questions = {r["question"] for r in rows(2, offset=10)}
    assert sum(1 for r in fw.requests if BAD in r.messages[0]["content"]
               and r.messages[-1]["content"] in val_questions) == 1
