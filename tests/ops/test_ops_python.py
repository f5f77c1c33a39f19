import pytest

import tracegrad as tg


@tg.op
def parse_number(text: str) -> int:
    """Pull the integer out of the model's answer."""
    cleaned = text.strip().rstrip(".")
    return int(cleaned)


def test_op_records_inputs_and_source():
    v = tg.Variable(" 7 ", role="answer")
    out = parse_number(v)
    assert out.value == 7
    assert out.parents == (v,)
    assert "def parse_number" in out.op.source
    assert out.op.description.startswith("Pull the integer")


def test_exception_becomes_error_variable_with_line_and_message(backward_engine):
    p = tg.Parameter("Say a number", role="prompt")
    answer = tg.concat(p, "seven")
    with pytest.raises(tg.ExecutionError) as info:
        parse_number(answer)
    err = info.value.variable
    assert err.is_objective
    assert "ValueError" in err.value and "invalid literal" in err.value
    assert "return int(cleaned)" in err.value
    assert "line" in err.value
    err.backward()
    # feedback reached the parameter through the concat, carrying the failing line
    assert p.grads and "return int(cleaned)" in p.grads[0].text
    assert backward_engine.calls == 0  # no LLM op on the path: pass-through only


def test_trainable_op_exposes_its_source_as_a_parameter():
    @tg.op(trainable=True)
    def double(x):
        return x * 2

    assert [p.value_kind for p in double.parameters()] == ["code"]
    out = double(tg.Variable(3))
    assert out.value == 6
    assert double.code in out.parents


def test_rewritten_code_runs_in_the_sandbox_and_a_timeout_is_feedback():
    @tg.op(trainable=True)
    def inc(x):
        return x + 1

    inc.code.value = "def inc(x):\n    return x + 10\n"
    assert inc(tg.Variable(1)).value == 11
    inc.limits.timeout = 1.0
    inc.code.value = "def inc(x):\n    while True:\n        pass\n"
    with pytest.raises(tg.ExecutionError) as info:
        inc(tg.Variable(1))
    assert "timed out" in info.value.variable.value


def test_an_exception_in_the_sandbox_names_its_line_once():
    @tg.op(trainable=True)
    def first(xs):
        return xs[0]

    first.code.value = "def first(xs):\n    n = len(xs)\n    return xs[n]\n"
    with pytest.raises(tg.ExecutionError) as info:
        first(tg.Variable([1, 2]))
    text = info.value.variable.value
    assert "IndexError" in text and "line 3: `return xs[n]`" in text
    assert text.count("at line") == 1, text
