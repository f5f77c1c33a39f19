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
