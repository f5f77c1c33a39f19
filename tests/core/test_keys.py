"""One reading of the names a model writes back, for backward and the optimizers alike."""

from __future__ import annotations

import json

import tracegrad as tg
from tracegrad.core.keys import match_keys
from tracegrad.testing import MockLLM


def test_run_keys_are_found_without_their_hash_sign_and_never_confused():
    names = ["system", "#1.input", "#2.input", "#11.input"]
    matched, rejected = match_keys(["System", "1.input", "`#2.input`", "input"], names)
    assert matched == {"System": "system", "1.input": "#1.input", "`#2.input`": "#2.input"}
    assert "ambiguous" in dict(rejected)["input"]


def test_a_key_naming_one_parameter_more_fully_is_not_ambiguous():
    matched, rejected = match_keys(["pipeline.qa.system"], ["qa.system", "rag.system"])
    assert matched == {"pipeline.qa.system": "qa.system"} and rejected == []


def test_a_second_key_for_the_same_name_is_rejected_not_applied_twice():
    matched, rejected = match_keys(["prompt", "PROMPT"], ["prompt"])
    assert matched == {"prompt": "prompt"}
    assert "duplicate" in dict(rejected)["PROMPT"]


def test_backward_reads_reply_keys_the_same_forgiving_way():
    engine = MockLLM(default=json.dumps({"`System`": "be shorter", "unrelated": "x"}))
    system = tg.Parameter("Answer.", role="system prompt")
    out = tg.LLMCall(MockLLM(default="7"), system=system)("q")
    out.backward("wrong", propagator=tg.TextualPropagator(engine))
    assert engine.calls == 1
    assert [g.text for g in system.grads] == ["be shorter"]
