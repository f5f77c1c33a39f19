"""The one definition of feedback that asks for no change."""

from __future__ import annotations

import json

import pytest

import tracegrad as tg
from tracegrad.core.feedback import is_positive, says_no_change
from tracegrad.testing import MockLLM


@pytest.mark.parametrize("text", ["No change needed.", "none", "N/A", "Looks good!",
                                  "[1] correct\n[2] The answer is correct."])
def test_stock_phrases_ask_for_no_change(text):
    assert says_no_change(text)
    assert is_positive(tg.Feedback(text))


@pytest.mark.parametrize("text", ["", "Be shorter.", "correct, but add units",
                                  "No change needed.\nAdd units."])
def test_anything_else_asks_for_a_change(text):
    assert not says_no_change(text)


def test_backward_drops_an_inputs_no_change_with_the_same_definition():
    engine = MockLLM(default=json.dumps({"system": "Looks good.", "input": "ask more clearly"}))
    system = tg.Parameter("Answer.", role="system prompt")
    question = tg.Parameter("how many?", role="question")
    out = tg.LLMCall(MockLLM(default="7"), system=system)(question)
    out.backward("wrong", propagator=tg.TextualPropagator(engine))
    assert system.grads == []
    assert [g.text for g in question.grads] == ["ask more clearly"]


@pytest.mark.parametrize("text, positive", [
    ("The work fully meets the instruction.\nVERDICT: PASS", True),
    ("The count is right and the format is as asked.\n**Verdict:** Pass", True),
    ("verdict = passed", True),
    ("The answer forgets the units.\nVERDICT: FAIL", False),
    ("Looks good.\nVERDICT: FAIL", False),  # the verdict line decides, not the wording
    ("VERDICT: FAIL\nOn second thought it is fine.\nVERDICT: PASS", True),  # the last one
    ("The verdict passes over the question of units.", False),  # prose, not a verdict line
])
def test_a_judges_verdict_line_decides(text, positive):
    assert is_positive(tg.Feedback(text)) is positive
    assert says_no_change(text) is positive


def test_a_passing_judge_costs_no_backward_call():
    """judge_system.txt asks for a verdict line; with PASS the output needs no rewriting."""
    judge = MockLLM(default="The answer counts every object once.\nVERDICT: PASS")
    backward = MockLLM(default=json.dumps({"system": "be terser"}))
    system = tg.Parameter("Answer.", role="system prompt")
    out = tg.LLMCall(MockLLM(default="7"), system=system)("how many?")
    loss = tg.TextLoss("Is the count right?", engine=judge)(out)
    loss.backward(propagator=tg.TextualPropagator(backward))
    assert "VERDICT" in tg.prompts.load("judge_system")
    assert backward.calls == 0


def _two_step(llm):
    from tracegrad.core.feedback import step_io
    summarize_prompt = tg.Parameter("Summarize the ticket.", role="summary prompt")
    route_prompt = tg.Parameter("Route the summary.", role="routing prompt")
    summarize = tg.LLMCall(llm, system=summarize_prompt, name="summarize")
    route = tg.LLMCall(llm, system=route_prompt, name="route")
    out = route(summarize(tg.Variable("printer on fire in room 4", role="ticket")))
    return summarize_prompt, route_prompt, out, step_io(out)


def test_each_step_of_a_pipeline_shows_what_it_read_and_wrote():
    from tracegrad.core.feedback import Evidence, render_evidence
    from tracegrad.testing import MockLLM
    llm = MockLLM(replies=lambda r: ("a printer problem" if "Summarize" in r.messages[0]["content"]
                                     else "hardware"))
    first, second, out, steps = _two_step(llm)
    assert steps[first.id] == ("", "a printer problem")  # its input is the example's own
    assert steps[second.id] == ("a printer problem", "hardware")
    row = Evidence({"ticket": "printer on fire in room 4"}, "safety", out.value, 0.0,
                   "a fire is a safety ticket", steps=steps)
    early = render_evidence([row], param=first)
    assert "this step wrote: a printer problem" in early and "this step read" not in early
    late = render_evidence([row], param=second)
    # the last step's output is the final answer: shown once, as "got"
    assert "this step read: a printer problem" in late and "this step wrote" not in late
    assert "this step" not in render_evidence([row])
