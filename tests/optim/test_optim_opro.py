"""OPRO: proposals from a bounded scoreboard, no backward pass."""

from __future__ import annotations

import re

import tracegrad as tg
from tracegrad.optim import OPRO
from tracegrad.testing import MockLLM
from tracegrad.testing.mock import request_text


def test_needs_no_backward_and_proposes_all_values_in_one_call():
    inst = tg.Parameter("Solve it.", name="instruction")
    temp = tg.Parameter(0.2, name="temperature")
    llm = MockLLM(['<value name="instruction">Solve it step by step.</value>\n'
                   '<value name="temperature">0.4</value>'])
    opt = OPRO([inst, temp], llm)
    assert opt.needs_backward is False and opt.propagator() is None
    opt.record_score(0.5)
    result = opt.step()
    assert llm.calls == 1 and result.calls == 1
    assert inst.value == "Solve it step by step." and temp.value == 0.4
    assert result.previous == {"instruction": "Solve it.", "temperature": 0.2}


def test_scoreboard_is_sorted_ascending_and_bounded_to_the_best():
    p = tg.Parameter("v0", name="instruction")
    llm = MockLLM(['<value name="instruction">v-new</value>'])
    opt = OPRO([p], llm, history=4)
    scores = [0.31, 0.92, 0.11, 0.55, 0.77, 0.05, 0.64]
    for i, s in enumerate(scores):
        p.value = f"candidate {i}"
        opt.record_score(s)
    assert len(opt.history) == 4
    opt.step()
    board = request_text(llm.requests[0]).split("## Earlier values")[1]
    shown = [float(x) for x in re.findall(r"### score ([\d.]+)", board)]
    assert shown == [0.55, 0.64, 0.77, 0.92]
    assert "candidate 1" in board and "candidate 5" not in board
    assert board.index("candidate 3") < board.index("candidate 1")  # best last
    assert "(the current values)" in board  # candidate 6 was the current value


def test_unscored_current_values_are_shown():
    p = tg.Parameter("start here", name="instruction")
    llm = MockLLM(['<value name="instruction">next</value>'])
    OPRO([p], llm, task="Classify the sentiment of reviews.").step()
    text = request_text(llm.requests[0])
    assert "## Current values (not scored yet)" in text and "start here" in text
    assert "Classify the sentiment of reviews." in text


def test_missing_block_is_repaired_unknown_names_are_reported():
    a = tg.Parameter("alpha", name="a")
    b = tg.Parameter("{{ x }} beta", name="b")
    llm = MockLLM(['<value name="a">alpha 2</value><value name="zeta">?</value>'
                   '<value name="b">no field</value>',
                   '<value name="b">{{ x }} beta 2</value>'])
    opt = OPRO([a, b], llm)
    result = opt.step()
    assert llm.calls == 2
    assert a.value == "alpha 2" and b.value == "{{ x }} beta 2"
    assert [e["param"] for e in result.events if e["event"] == "unknown_key"] == ["zeta"]
    assert "{{ x }}" in llm.requests[1].messages[-1]["content"]


def test_failed_repair_keeps_the_old_value_with_an_event():
    a = tg.Parameter("alpha", name="a")
    b = tg.Parameter(3, name="b")
    llm = MockLLM(['<value name="a">alpha 2</value>', '<value name="b">three</value>'])
    result = OPRO([a, b], llm).step()
    assert a.value == "alpha 2" and b.value == 3
    kinds = [(e["param"], e["event"]) for e in result.events]
    assert ("b", "repair") in kinds and ("b", "constraint_violation") in kinds


def test_duplicate_proposal_is_flagged():
    p = tg.Parameter("v1", name="x")
    llm = MockLLM(['<value name="x">v0</value>'])
    opt = OPRO([p], llm)
    p.value = "v0"
    opt.record_score(0.2)
    p.value = "v1"
    opt.record_score(0.4)
    result = opt.step()
    assert any(e["event"] == "duplicate" for e in result.events)
