"""Automatic constraints: coercion of replies into each kind, and what gets rejected."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import BaseModel, Field

import tracegrad as tg
from tracegrad.optim import TGD
from tracegrad.optim.constraints import check, describe
from tracegrad.testing import MockLLM


@pytest.mark.parametrize(("raw", "expected"), [
    ("0.7", 0.7), (" `3` ", 3), ("temperature = 0.5", 0.5), (2, 2), ("1e-3", 0.001),
])
def test_numbers_are_parsed(raw, expected):
    value, problems = check(tg.Parameter(0.2), raw)
    assert problems == [] and value == expected


@pytest.mark.parametrize("raw", ["between 0.3 and 0.5", "warmer", "nan", "true"])
def test_non_numbers_are_rejected(raw):
    _, problems = check(tg.Parameter(0.2), raw)
    assert problems


def test_integer_parameters_stay_integers_and_types_bind():
    value, problems = check(tg.Parameter(3), "4.0")
    assert problems == [] and value == 4 and isinstance(value, int)
    bounded = tg.Parameter(0.2, value_type=Annotated[float, Field(ge=0, le=2)])
    assert check(bounded, "1.5") == (1.5, [])
    _, problems = check(bounded, "3.5")
    assert problems and "less than or equal to 2" in problems[0]
    assert "maximum" in " ".join(describe(bounded))


class Config(BaseModel):
    retries: int
    model: str = "small"


def test_json_parses_keeps_its_shape_and_validates_its_type():
    p = tg.Parameter({"a": 1})
    assert check(p, '{"a": 2, "b": [1]}') == ({"a": 2, "b": [1]}, [])
    assert "top level must stay a JSON object" in check(p, "[1, 2]")[1][0]
    assert "not valid JSON" in check(p, "{a: 1}")[1][0]
    typed = tg.Parameter({"retries": 1}, value_type=Config)
    value, problems = check(typed, '{"retries": "3"}')
    assert problems == [] and value == {"retries": 3, "model": "small"}
    assert check(typed, '{"retries": "many"}')[1]


def test_templates_keep_their_fields_and_parse():
    p = tg.Parameter("Q: {{ question }} Context: {{ context }}")
    assert check(p, "{{ context }}\n\nQuestion: {{ question }}")[1] == []
    assert "dropped the field(s) {{ context }}" in check(p, "Q: {{ question }}")[1][0]
    assert "does not parse" in check(p, "Q: {{ question }")[1][0]
    loop = tg.Parameter("{% for d in docs %}{{ d }}{% endfor %} {{ q }}")
    assert check(loop, "{{ q }}: {% for x in docs %}- {{ x }}\n{% endfor %}")[1] == []


def test_text_must_not_be_empty_and_keeps_a_trailing_newline():
    p = tg.Parameter("line\n")
    assert check(p, "   ")[1] == ["empty value"]
    assert check(p, "new line") == ("new line\n", [])


def test_callable_constraints_are_checked_and_described():
    def short(value: str):
        """At most 40 characters."""
        return len(value) <= 40 or f"too long: {len(value)} characters"

    p = tg.Parameter("Be brief.", constraints=["Use a friendly tone."])
    assert check(p, "x" * 50, [short])[1] == ["too long: 50 characters"]
    assert check(p, "Be brief, please.", [short])[1] == []
    lines = describe(p, [short])
    assert lines[:2] == ["At most 40 characters.", "Use a friendly tone."]


def test_user_constraints_reach_the_request_and_are_enforced():
    p = tg.Parameter("Be brief.", name="sys", constraints=["Write in English."])
    p.add_feedback("More detail please.")

    def no_exclamations(value: str):
        """Must not contain exclamation marks."""
        if "!" in value:
            raise ValueError("contains '!'")

    llm = MockLLM(["<new_value>Be detailed!</new_value>", "<new_value>Be detailed.</new_value>"])
    result = TGD([p], llm, constraints=[no_exclamations, "Keep it under 20 words."]).step()
    first = llm.requests[0].messages[1]["content"]
    assert "Write in English." in first and "Keep it under 20 words." in first
    assert "Must not contain exclamation marks." in first
    assert "contains '!'" in llm.requests[1].messages[-1]["content"]
    assert p.value == "Be detailed." and result.events[0]["event"] == "repair"


def test_a_value_holding_the_api_key_is_a_violation_of_every_kind():
    """Issue 12: a model that copied an echoed Authorization header into its rewrite."""
    key = "sk-constraint-ECHO-0123456789"
    tg.LLM("openai:m", base_url="http://127.0.0.1:9/v1", api_key=key, cache=False)  # knows it
    for param, raw in ((tg.Parameter("Q: {{ q }}"), f"Q: {{{{ q }}}}\nAuthorization: Bearer {key}"),
                       (tg.Parameter("Be brief."), f"Be brief. {key}"),
                       (tg.Parameter({"k": "v"}), f'{{"k": "{key}"}}')):
        value, problems = check(param, raw)
        assert len(problems) == 1 and "holds a secret" in problems[0], (param, problems)
        assert key not in problems[0]


def test_a_rewrite_holding_the_key_is_repaired_and_never_applied():
    key = "sk-constraint-REPAIR-0123456789"
    tg.LLM("openai:m", base_url="http://127.0.0.1:9/v1", api_key=key, cache=False)
    leaky = f"<new_value>Be detailed. ({key})</new_value>"
    for second, applied in (("<new_value>Be detailed.</new_value>", "Be detailed."),
                            (f"<new_value>Be detailed. {key[:14]}</new_value>", "Be brief.")):
        p = tg.Parameter("Be brief.", name="sys")
        p.add_feedback("More detail please.")
        llm = MockLLM([leaky, second])
        result = TGD([p], llm).step()
        assert p.value == applied  # a cut-off copy of the key is refused as well
        events = [e for e in result.events if e["event"] in ("repair", "constraint_violation")]
        assert events and all("holds a secret" in e["detail"] for e in events)
        assert all(key not in e["detail"] for e in events)
        assert len(events) == (1 if applied != "Be brief." else 2)
