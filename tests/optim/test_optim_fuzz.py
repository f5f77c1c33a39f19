"""Whatever a model replies, a step ends normally and only checked values are applied."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracegrad as tg
from tracegrad.optim import OPRO, TGD, TraceOptimizer
from tracegrad.optim.constraints import check
from tracegrad.testing import MockLLM

CODE = "def f(x: int) -> int:\n    return x + 1\n"
INITIAL = {
    "text": "Answer briefly.",
    "template": "Q: {{ question }}",
    "number": 0.5,
    "json": {"k": 1},
    "code": CODE,
}

text_or_tagged = st.one_of(
    st.text(max_size=200),
    st.text(max_size=200).map(lambda s: f"<new_value>{s}</new_value>"),
    st.sampled_from(["<new_value>def f(x):\n    return x</new_value>",
                     "<new_value>import os\ndef f(x):\n    return 1</new_value>",
                     "<new_value>{{ question }} ok</new_value>", "<new_value>1e309</new_value>",
                     "<new_value>[1, 2]</new_value>", "<new_value>{\"k\": 2}</new_value>",
                     "<new_value>\x00</new_value>", "<new_value>{% if %}</new_value>"]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def params() -> list[tg.Parameter]:
    out = []
    for kind, value in INITIAL.items():
        p = tg.Parameter(value, name=kind, value_kind=kind)
        if kind == "code":
            p.function_name = "f"
            p.signature = "(x: int) -> int"
        p.add_feedback("make it better")
        out.append(p)
    return out


def assert_consistent(ps: list[tg.Parameter], result) -> None:
    for p in ps:
        if p.name in result.updated:
            assert p.value == result.updated[p.name]
            assert check(p, p.value)[1] == [], (p.name, p.value)
        else:
            assert p.value == INITIAL[p.name]
    json.dumps(result.to_dict())


@FUZZ
@given(first=text_or_tagged, second=text_or_tagged)
def test_tgd_survives_any_reply(first, second):
    ps = params()
    llm = MockLLM(lambda r: first if len(r.messages) == 2 else second)
    result = TGD(ps, llm, max_concurrency=1).step()
    assert result.calls == llm.calls <= 2 * len(ps)
    assert_consistent(ps, result)


@FUZZ
@given(reply=st.one_of(st.text(max_size=100),
                       st.dictionaries(st.sampled_from([*INITIAL, "values", "reasoning", "zz"]),
                                       json_values, max_size=6).map(json.dumps),
                       st.dictionaries(st.sampled_from([*INITIAL, "TEXT", "other"]), json_values,
                                       max_size=6).map(lambda d: json.dumps({"values": d}))))
def test_trace_optimizer_survives_any_reply(reply):
    ps = params()
    llm = MockLLM([reply, reply, reply])
    result = TraceOptimizer(ps, llm).step()
    assert result.calls == llm.calls <= 3
    assert_consistent(ps, result)


@FUZZ
@given(reply=st.lists(st.tuples(st.sampled_from([*INITIAL, "x"]), st.text(max_size=30)), max_size=6)
       .map(lambda kv: "".join(f'<value name="{k}">{v}</value>' for k, v in kv)))
def test_opro_survives_any_reply(reply):
    ps = params()
    llm = MockLLM([reply, reply])
    result = OPRO(ps, llm).step()
    assert result.calls == llm.calls <= 2
    assert_consistent(ps, result)
