"""Property tests: untrusted text into every parser yields a value or a typed error, never a crash."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import tracegrad as tg
from tracegrad.llm.structured import extract_json, parse_as
from tracegrad.template import TemplateError, placeholders, render

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Answer(BaseModel):
    value: int
    reason: str


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@FAST
@given(st.text(max_size=400))
def test_extract_json_raises_only_value_error(text):
    try:
        extract_json(text)
    except ValueError:
        pass


@FAST
@given(json_values, st.sampled_from(["", "Sure! ", "```json\n", "Here:\n```\n"]), st.sampled_from(["", "\n```", " hope this helps"]))
def test_extract_json_finds_json_wrapped_in_prose_or_fences(value, prefix, suffix):
    if not isinstance(value, dict | list):
        return
    text = prefix + json.dumps(value) + suffix
    assert extract_json(text) == value


@FAST
@given(st.text(max_size=300))
def test_parse_as_raises_only_value_error(text):
    try:
        parse_as(text, Answer)
    except ValueError:
        pass


@FAST
@given(st.text(max_size=200))
def test_templates_yield_text_or_template_error(text):
    try:
        names = placeholders(text)
        render(text, dict.fromkeys(names, "x"))
    except TemplateError:
        pass


@FAST
@given(st.sampled_from(["__class__", "__globals__", "__init__", "__subclasses__", "mro", "__dict__"]))
def test_sandbox_blocks_dunder_escapes(attr):
    try:
        out = render("{{ x." + attr + " }}", {"x": "s"})
    except TemplateError as e:
        assert "sandbox" in str(e) or "not given" in str(e)
    else:
        assert "class" not in out and "function" not in out


def test_huge_prompt_value_is_bounded_in_backward():
    from tracegrad.testing import MockLLM

    engine = MockLLM(default='{"system": "shorter"}')
    system = tg.Parameter("s" * 100_000, role="system prompt")
    out = tg.LLMCall(MockLLM(default="ok"), system=system)("q" * 10_000_000)
    out.backward("bad", propagator=tg.TextualPropagator(engine))
    sent = engine.texts()[0]
    assert len(sent) < 10_000 and "characters omitted" in sent
