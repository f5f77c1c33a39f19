"""The one history renderer: TGD's and the trace optimizer's requests, byte for byte."""

from __future__ import annotations

import tracegrad as tg
from tracegrad.optim.history import render_history, score_text

HISTORY = [
    {"step": 0, "values": {"a": "old a", "b": 3}, "score": 0.5, "n": 2, "feedback": "half right",
     "led_to": {}},
    {"step": 1, "values": {"a": "new a", "b": 3}, "score": 0.75, "n": 1, "feedback": "",
     "led_to": {"a": "too vague"}},
]


def params() -> dict[str, tg.Parameter]:
    return {"a": tg.Parameter("new a", name="a"), "b": tg.Parameter(4, name="b")}


def test_a_request_about_one_variable_shows_its_values_and_why_they_were_written():
    text = render_history(HISTORY, {"a": params()["a"]}, size=3, value_limit=100, single=True)
    assert text == (
        "## Earlier values and their scores (oldest first; higher is better)\n"
        "### After step 0: score 0.5 (mean of 2 evaluations)\n"
        "<value>\nold a\n</value>\n"
        "evaluation: half right\n\n"
        "### After step 1: score 0.75\n"
        "value: the current value (shown above)\n"
        "written in response to: too vague"
    )


def test_a_request_about_several_variables_labels_each_value():
    text = render_history(HISTORY, params(), size=1, value_limit=100)
    assert text == (
        "## Earlier values and their scores (oldest first; higher is better)\n"
        "### After step 1: score 0.75\n"
        "a: the current value\n"
        "b:\n<value>\n3\n</value>"
    )


def test_nothing_to_show_renders_nothing():
    assert render_history(HISTORY, params(), size=0, value_limit=100) == ""
    assert render_history([], params(), size=3, value_limit=100) == ""
    assert render_history(HISTORY, {"c": tg.Parameter("x", name="c")}, size=3,
                          value_limit=100) == ""


def test_score_wording_is_shared():
    assert score_text({"score": 0.123456}) == "score 0.1235"
    assert score_text({"score": 1, "n": 3}) == "score 1 (mean of 3 evaluations)"
