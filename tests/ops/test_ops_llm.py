import pytest

import tracegrad as tg
from tracegrad.testing import MockLLM


def test_llm_call_sends_system_and_input_and_records_both():
    engine = MockLLM(["3"])
    system = tg.Parameter("Count.", role="system prompt")
    q = tg.Variable("a cat and two dogs", role="question")
    out = tg.LLMCall(engine, system=system, temperature=0)(q)
    assert out.value == "3"
    req = engine.requests[0]
    assert req.messages == [
        {"role": "system", "content": "Count."},
        {"role": "user", "content": "a cat and two dogs"},
    ]
    assert req.params == {"temperature": 0} and req.purpose == "forward"
    assert set(out.op.inputs) == {"system", "input"}


def test_formatted_call_renders_template_in_the_sandbox():
    engine = MockLLM(default="ok")
    tpl = tg.Parameter("Q: {{ question }}\nA:", role="template")
    call = tg.FormattedLLMCall(engine, tpl)
    out = call(question="2+2?")
    assert engine.requests[0].messages[-1]["content"] == "Q: 2+2?\nA:"
    assert tpl in out.parents
    bad = tg.FormattedLLMCall(engine, "{{ question.__class__.__mro__ }}")
    with pytest.raises(tg.TemplateError, match="sandbox"):
        bad(question="x")
    with pytest.raises(tg.TemplateError, match="not given"):
        call(other="x")


def test_images_are_sent_as_data_urls():
    engine = MockLLM(default="a red square")
    img = tg.Image(b"\x89PNG fake", "image/png")
    tg.LLMCall(engine)(tg.Variable([img, "What is this?"]))
    content = engine.requests[0].messages[-1]["content"]
    assert content[0]["type"] == "image_url"
    assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert content[1] == {"type": "text", "text": "What is this?"}


async def _acall(call, x):
    return await call.acall(x)


def test_async_call_twin():
    import asyncio

    engine = MockLLM(default="async ok")
    out = asyncio.run(_acall(tg.LLMCall(engine, system="s"), "q"))
    assert out.value == "async ok" and engine.calls == 1


def test_metric_loss_explains_expected_vs_got():
    loss = tg.MetricLoss(lambda p, e: p == e)(tg.Variable("7"), "3")
    assert loss.is_objective and loss.score == 0.0
    assert "expected '3'" in loss.value and "got '7'" in loss.value
    ok = tg.MetricLoss(lambda p, e: (1.0, "perfect"))(tg.Variable("3"), "3")
    assert ok.score == 1.0 and ok.value == "perfect"
    with pytest.raises(TypeError):
        tg.MetricLoss(lambda p, e: "yes")(tg.Variable("3"), "3")


def test_multi_field_evaluation_sends_every_field(backward_engine):
    ev = tg.MultiFieldEvaluation("Is the answer right given the reference?")
    loss = ev(question="q?", answer=tg.Variable("7", role="answer"), reference="3")
    text = backward_engine.texts("judge")[0]
    assert "<question" in text and "<answer" in text and "<reference" in text
    assert loss.is_objective
