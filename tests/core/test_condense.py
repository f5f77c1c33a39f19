"""Over-budget feedback cut to fit without a call (tracegrad.core.condense)."""

from __future__ import annotations

import random

import pytest

import tracegrad as tg
from tracegrad.core.condense import condense_feedback, group_feedback
from tracegrad.core.feedback import FeedbackItem, collect_feedback
from tracegrad.optim import TGD, TraceOptimizer
from tracegrad.testing import MockLLM
from tracegrad.testing.mock import request_text

PROBLEMS = {
    "unit": "The answer leaves out the unit; the prompt should ask for the unit after the number",
    "dozen": "A dozen was counted as one object; the prompt should say a dozen means twelve",
    "toys": "Toy animals were counted as animals; the prompt should say toys are not animals",
}


def critiques(counts: dict[str, int], seed: int = 0) -> list[FeedbackItem]:
    """Critiques as a backward model writes them: same point, example-specific details."""
    rng = random.Random(seed)
    grads = []
    for key, n in counts.items():
        for i in range(n):
            got, want = rng.randint(1, 30), rng.randint(1, 30)
            grads.append(tg.Feedback(f"{PROBLEMS[key]}. Here it answered {got}, expected {want}.",
                                     source=f"{key}{i}", context={"inputs": f"question {i}"}))
    rng.shuffle(grads)
    return collect_feedback(grads)


def test_critiques_of_one_problem_merge_and_are_counted_most_frequent_first():
    groups = group_feedback(critiques({"unit": 9, "dozen": 5, "toys": 2}))
    assert [g.count for g in groups] == [9, 5, 2]
    assert [next(k for k, v in PROBLEMS.items() if v in g.text) for g in groups] == \
        ["unit", "dozen", "toys"]
    assert len(groups[0].sources) == 9


def test_the_cut_fits_the_budget_however_much_feedback_there_is():
    for n in (8, 64, 640):
        items = collect_feedback(
            tg.Feedback(f"Problem {i}: " + " ".join(f"w{i}x{j}" for j in range(60)),
                        source=f"s{i}", context={"inputs": "q " * 500, "output": "o " * 500})
            for i in range(n))  # every item distinct: nothing merges
        cut = condense_feedback(items, limit=6000, context_limit=400)
        assert len(cut.text) <= 6000 + 200, (n, len(cut.text))
        assert len(cut.shown) + cut.omitted == n
        if cut.omitted:
            assert f"[{cut.omitted} less frequent points from {cut.omitted_runs} runs left out" \
                in cut.text


def test_a_rare_point_that_does_not_fit_is_counted_not_silently_dropped():
    counts = {"unit": 40, "dozen": 20, "toys": 1}
    cut = condense_feedback(critiques(counts), limit=950)  # room for two points
    assert PROBLEMS["unit"] in cut.text and PROBLEMS["dozen"] in cut.text
    assert PROBLEMS["toys"] not in cut.text
    assert cut.omitted == 1 and "[1 less frequent point from 1 run left out" in cut.text
    assert "at most 1 run]" in cut.text
    assert cut.text == condense_feedback(critiques(counts), limit=950).text  # deterministic


def test_successes_are_counted_and_a_few_kept_so_a_rewrite_keeps_what_works():
    ok = [tg.Feedback(f"This example was answered correctly (input q{i}). Keep what makes it "
                      "work.", source=f"ok{i}", context={"success": True}) for i in range(10)]
    items = critiques({"unit": 30}) + collect_feedback(ok)
    cut = condense_feedback(items, limit=6000)
    assert cut.text.count("answered correctly") == 2 and "[10 runs needed no change]" in cut.text
    assert 'times="30"' in cut.text


def test_points_about_different_parameters_never_merge():
    a = FeedbackItem("Say the unit.", ["x"], {"concerns": "a"})
    b = FeedbackItem("Say the unit.", ["y"], {"concerns": "b"})
    assert len(group_feedback([a, b])) == 2


def test_tgd_cuts_without_a_call_and_a_summary_costs_one():
    def fill(p: tg.Parameter) -> None:
        for i in range(40):
            p.add_feedback(tg.Feedback(f"{PROBLEMS['unit']} (example {i}). " * 3, source=f"l{i}"))

    for condense, calls in (("select", 1), ("summary", 2)):
        p = tg.Parameter("Answer.", name="sys")
        fill(p)
        llm = MockLLM(lambda r: "- 40 runs: no unit" if "You condense" in request_text(r)
                      else "<new_value>Answer with the unit.</new_value>")
        result = TGD([p], llm, feedback_budget=2000, condense=condense).step()
        assert result.calls == llm.calls == calls and p.value == "Answer with the unit."
    with pytest.raises(ValueError, match="condense='llm'"):
        TGD([p], condense="llm")


def test_trace_optimizer_cuts_without_a_call():
    p = tg.Parameter("Be brief.", name="sys")
    for i in range(60):
        p.add_feedback(tg.Feedback(f"{PROBLEMS['dozen']} (example {i}). " * 3, source=f"l{i}"))
    llm = MockLLM(['{"values": {"sys": "A dozen is twelve."}}'])
    result = TraceOptimizer([p], llm, feedback_budget=2000).step()
    assert llm.calls == 1 and p.value == "A dozen is twelve."
    assert any(e["event"] == "feedback_condensed" for e in result.events)
    assert 'times="60"' in request_text(llm.requests[0])
    with pytest.raises(ValueError):
        TraceOptimizer([p], condense="")
