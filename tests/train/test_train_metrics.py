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


# -- metrics that mean what they say (issue 14 section 5) ----------------------------------


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("The outputs are wrong", "(A)"),  # punctuation stripped, 'a' matched inside 'are'
        ("I am not sure", "i"),  # a lone letter is an option label, not the pronoun
        ("the answer is 12", "1"),  # '1' is not a number inside '12'
        ("x = 12.5", "12"),
        ("Parisian food", "paris"),
    ],
)
def test_contains_is_literal_and_boundary_aware(reply, expected):
    assert M.contains(reply, expected)[0] == 0.0
    assert get_metric("contains")(reply, expected)[0] == 0.0


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("It is  PARIS, France", "paris"),
        ("So the answer is (A).", "(A)"),
        ("the answer is 12", "12"),
        ("The answer is B", "b"),
        ("(c)", "C"),
        ("New  York city", "new york"),
        ("It is Paris, of course", "Paris."),  # sentence punctuation at the end is optional
        ("Really?!", "?!"),
    ],
)
def test_contains_still_finds_the_expected_text(reply, expected):
    assert M.contains(reply, expected)[0] == 1.0, M.contains(reply, expected)


_QUESTION = {"question": "Which is the capital of France?\nOptions:\n(A) London\n(B) Paris\n(C) Rome"}


@pytest.mark.parametrize(
    "reply, expected, score",
    [
        ("Let me think. (A) is in England, so the answer is (B).", "(B)", 1.0),
        ("B", "b", 1.0),
        ("Paris", "(B)", 1.0),  # by option text, the options read from the question
        ("Answer: (A)", "Paris", 0.0),  # expected by text, picked by letter
        ("(A) or (B)", "B", 0.0),  # several options, no pick
        ("London or Paris", "B", 0.0),
        ("I am not sure", "A", 0.0),
        ("The outputs are wrong", "(A)", 0.0),
    ],
)
def test_choice_finds_the_picked_option(reply, expected, score):
    s, why = M.choice(reply, expected, _QUESTION)
    assert s == score, why
    assert get_metric("choice")(reply, expected, inputs=_QUESTION)[0] == score


def test_choice_explains_what_to_fix():
    _, why = M.choice("(A) or (B)", "B", _QUESTION)
    assert "several options" in why and "(B) 'Paris'" in why
    _, why = M.choice("The answer is (A).", "B", _QUESTION)
    assert "expected (B) 'Paris'" in why and "picks (A) 'London'" in why


def test_choice_accepts_big_bench_target_scores():
    scores = {"London": 0, "Paris": 1, "Rome": 0}
    assert M.choice("Paris", scores)[0] == 1.0
    assert M.choice("the answer is (B)", {"target_scores": scores})[0] == 1.0  # A, B, C in order
    assert M.choice("Rome", scores)[0] == 0.0
    assert M.choice("Rome", {"London": 0, "Paris": 1, "Rome": 0.5})[0] == 0.5
    with pytest.raises(ValueError, match="target_scores"):
        M.choice("x", {"label": "Paris"})


def test_choice_options_from_a_list_input_and_longer_option_texts():
    inputs = {"text": "I loved it", "options": ["negative", "positive"]}
    assert M.choice("Sentiment: positive", "positive", inputs)[0] == 1.0
    assert M.choice("negative", "positive", inputs)[0] == 0.0
    colours = {"q": "Pick one: (A) red (B) dark red (C) blue"}
    assert M.choice("It is dark red.", "B", colours)[0] == 1.0  # not also (A) 'red'


def test_the_trainer_hands_the_inputs_to_choice():
    """choice reads the options from the question: evaluate must pass the inputs."""
    data = [{"question": _QUESTION["question"], "answer": "(B)"}]
    result = tg.evaluate(lambda question: "Paris", data, "choice",
                         input_fields=["question"], output_field="answer")
    assert result.score == 1.0


def test_exact_is_strict_and_exact_match_forgives():
    assert M.exact("Paris", "Paris")[0] == 1.0
    assert M.exact("Paris\n", "Paris")[0] == 1.0  # outer whitespace is not text
    score, why = M.exact("paris.", "Paris")
    assert score == 0.0 and "differs only in case" in why
    assert get_metric("exact")("paris", "Paris")[0] == 0.0
    assert get_metric("exact_match")("paris", "Paris")[0] == 1.0


def test_extract_compares_the_first_group():
    m = get_metric(r"extract:answer:\s*(\w+)")
    assert m("Reasoning... so 3 + 4 = 7.\nAnswer: Seven", "seven")[0] == 1.0
    assert m("Answer: eight. Answer: seven", "seven")[0] == 0.0  # the first match counts
    score, why = m("It is seven", "seven")
    assert score == 0.0 and "does not match" in why
    assert get_metric(r"extract:\d+")("about 42 apples", "42")[0] == 1.0  # no group: the match
    with pytest.raises(ValueError, match="invalid regular expression"):
        get_metric("extract:(")


def test_every_registered_name_is_documented():
    from pathlib import Path

    from tracegrad.frontmatter import KNOWN_KEYS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in ("exact", "choice", "extract:REGEX", "contains"):
        assert name in M.metric_names()
        assert f"`{name}" in readme
        assert name in KNOWN_KEYS["metric"]


# -- judges: reasoning first, a verdict line, the inputs, a threshold ------------------------


def test_the_metric_judge_reasons_first_and_its_verdict_decides():
    prompt = tg.prompts.load("metric_judge")
    assert prompt.index("reason") < prompt.index("Score:") < prompt.index("VERDICT")
    judge = MockLLM(["The count matches the question.\nScore: 8\nVERDICT: PASS",
                     "It counts the cat twice.\nScore: 10\nVERDICT: FAIL"])
    metric = get_metric(M.llm_judge("Is the count right?", engine=judge))
    s, why = metric("7", "7")
    assert s == 1.0 and "The count matches the question." in why
    assert tg.core.feedback.is_positive(tg.Feedback(why))  # no backward call for it
    s, why = metric("8", "7")
    assert s == 0.9 and "counts the cat twice" in why  # a FAIL is below 1 whatever its grade
    assert not tg.core.feedback.is_positive(tg.Feedback(why))


def test_the_judge_sees_the_question():
    judge = MockLLM(["Right.\nScore: 9\nVERDICT: PASS"])
    data = [{"question": "How many legs has a spider?", "answer": "8"}]
    result = tg.evaluate(lambda question: "8", data, M.llm_judge("Correct?", engine=judge),
                         input_fields=["question"], output_field="answer")
    assert result.score == 1.0
    assert "How many legs has a spider?" in judge.texts()[0]


def test_the_pass_score_is_a_setting():
    replies = ["Good.\nScore: 8\nVERDICT: FAIL", "Weak.\nScore: 6\nVERDICT: PASS"]
    metric = M.llm_judge("r", engine=MockLLM(replies), pass_score=7)
    assert metric("a", "b")[0] == 1.0  # 8 >= 7, whatever the verdict
    assert metric("a", "b")[0] == 0.6


def test_old_format_judges_still_parse():
    assert M.parse_judgement("Score: 7\nReason: mostly right") == (7.0, "mostly right")
    assert M.llm_judge("r", engine=MockLLM(["Score: 10\nReason: fine"]))("a", "b")[0] == 1.0
    assert M.llm_judge("r", engine=MockLLM(["Score: 9\nReason: close"]))("a", "b")[0] == 0.9
    s, why = M.llm_judge("r", engine=MockLLM(["Fine as it is.\nVERDICT: PASS"]))("a", "b")
    assert s == 1.0  # a verdict without a grade


def test_a_prompt_file_judge_takes_a_pass_score(tmp_path):
    from tracegrad.promptfile import PromptFile, PromptFileError

    path = tmp_path / "t.prompt"
    path.write_text("---\ninput: [q]\noutput: a\nmetric: {judge: 'Is it right?', pass_score: 7}\n"
                    "---\n{{ q }}\n")
    pf = PromptFile.load(path)
    metric = pf.metric_fn(judge_engine=MockLLM(["ok\nScore: 7\nVERDICT: FAIL"]))
    assert metric("a", "b")[0] == 1.0
    path.write_text("---\ninput: [q]\noutput: a\nmetric: {judge: r, pass_score: 11}\n---\n{{ q }}\n")
    with pytest.raises(PromptFileError, match="pass_score"):
        PromptFile.load(path)
    path.write_text("---\ninput: [q]\noutput: a\nmetric: 'extract:('\n---\n{{ q }}\n")
    with pytest.raises(PromptFileError, match="invalid regular expression"):
        PromptFile.load(path)
