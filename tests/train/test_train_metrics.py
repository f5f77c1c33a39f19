from __future__ import annotations

import pytest

import tracegrad as tg
from tracegrad.testing import MockLLM
from tracegrad.train import metrics as M
from tracegrad.train.metrics import get_metric


def test_exact_match_normalises_and_explains():
    assert M.exact_match("  Paris. ", "paris")[0] == 1.0
    assert M.exact_match("The capital is Paris", "Paris")[0] == 0.0
    score, why = M.exact_match("The answer is 7.", "7")
    assert score == 0.0 and "expected '7'" in why and "exactly the answer" in why
    assert M.exact_match(tg.Variable("B"), ["a", "b"])[0] == 1.0


def test_contains_and_token_f1():
    assert M.contains("It is  PARIS, France", "paris")[0] == 1.0
    assert M.contains("London", "Paris") == (
        0.0,
        "Wrong: the output should contain 'Paris', got 'London'.",
    )
    assert M.token_f1("the cat sat", "a cat sat")[0] == 1.0
    score, why = M.token_f1("cat sat on mat", "cat sat")
    assert score == pytest.approx(2 * 2 / 6)
    assert "Extra words: on mat" in why


@pytest.mark.parametrize(
    "text, expected, ok",
    [
        ("The total is $1,234.50.", 1234.5, True),
        ("first 3 then 4", "4", True),
        ("x = -2.5e3", -2500, True),
        ("about 10", "10.0000001", True),
        ("11", 10, False),
        ("no digits here", 5, False),
    ],
)
def test_numeric(text, expected, ok):
    score, why = M.numeric(text, expected)
    assert score == (1.0 if ok else 0.0), why
    if "no digits" in text:
        assert "contains no number" in why


def test_numeric_tolerance_factory():
    loose = M.numeric(tolerance=0.5)
    assert loose("3.4", 3)[0] == 1.0 and loose("3.6", 3)[0] == 0.0
    rel = M.numeric(tolerance=0.1, relative=True)
    assert rel("105", 100)[0] == 1.0 and rel("120", 100)[0] == 0.0


def test_regex_with_expected_placeholder():
    m = M.regex(r"^\s*{expected}\s*$")
    assert m(" 3.5 ", "3.5")[0] == 1.0 and m("3x5", "3.5")[0] == 0.0  # '.' is escaped
    assert M.regex(r"\bparis\b")("PARIS!", None)[0] == 1.0


def test_json_field_match_fenced_and_partial():
    reply = 'Sure! Here it is:\n```json\n{"name": "Ada", "age": "36", "city": "London"}\n```'
    assert M.json_field_match(reply, {"name": "ada", "age": 36})[0] == 1.0
    score, why = M.json_field_match('{"name": "Ada"}', {"name": "Ada", "age": 36})
    assert score == 0.5 and "'age' is missing" in why
    only = M.json_field_match(fields=["name"])
    assert only('{"name": "Ada", "age": 1}', {"name": "Ada", "age": 36})[0] == 1.0
    score, why = M.json_field_match("no json at all", {"a": 1})
    assert score == 0.0 and "no JSON could be read" in why


@pytest.mark.parametrize(
    "reply, score",
    [
        ("Score: 7\nReason: mostly right", 0.7),
        ('```json\n{"score": 9, "reason": "good"}\n```', 0.9),
        ("I'd give it 4/10 because it rambles.", 0.4),
        ("**Score:** 12", 1.0),
        ("8", 0.8),
    ],
)
def test_llm_judge_parses(reply, score):
    judge = MockLLM([reply])
    s, why = M.llm_judge("Is it right?", engine=judge)("answer", "reference")
    assert s == pytest.approx(score)
    assert judge.requests[0].purpose == "judge"
    assert "Is it right?" in judge.texts()[0] and "reference" in judge.texts()[0]
    assert why.startswith("Judge score")


def test_llm_judge_unparseable_is_zero_with_reason():
    s, why = M.llm_judge("rubric", engine=MockLLM(["I cannot grade this."]))("a", "b")
    assert s == 0.0 and "no readable score" in why and "I cannot grade this." in why


def test_llm_judge_uses_backward_engine_by_default():
    judge = MockLLM(["Score: 10\nReason: fine"])
    with tg.backward_llm(judge):
        assert M.llm_judge("r")("a", None)[0] == 1.0
    assert judge.calls == 1


def test_get_metric_by_name_and_callable():
    assert get_metric("exact_match")("A", "a") == (1.0, "Correct: expected 'a' and got it.")
    assert get_metric("numeric:0.5")("2.4", 2)[0] == 1.0
    assert get_metric("regex:^ok$")("OK", None)[0] == 1.0
    assert get_metric("json_field_match:a")('{"a": 1, "b": 0}', {"a": 1, "b": 2})[0] == 1.0
    assert get_metric(M.numeric)("7", 7)[0] == 1.0  # an un-called factory still works
    # any callable returning a float or a bool is a metric; the explanation is filled in
    s, why = get_metric(lambda p, e: p == e)("x", "y")
    assert s == 0.0 and "expected 'y'" in why
    assert get_metric(lambda p, e: (2.0, "too good"))("x", "y") == (1.0, "too good")
    with pytest.raises(ValueError, match="unknown metric"):
        get_metric("nope")
