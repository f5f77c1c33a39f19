import tracegrad as tg
from tracegrad.testing import MockLLM


def test_trace_propagator_makes_no_calls_and_hands_each_parameter_its_subgraph():
    forward = MockLLM(default="7")
    judge = MockLLM(default="wrong: expected 3")
    a = tg.Parameter("Solve it.", role="solver prompt", name="a")
    b = tg.Parameter("Only the number.", role="formatter prompt", name="b")
    q = tg.Variable("how many?", role="question", name="q")
    s = tg.LLMCall(forward, system=a)(q)
    s.name = "s"
    f = tg.LLMCall(forward, system=b)(s)
    f.name = "f"
    loss = tg.TextLoss("correct?", engine=judge)(f)
    loss.name = "loss"
    before = judge.calls + forward.calls
    result = loss.backward(propagator=tg.TracePropagator())
    assert result.calls == 0 and judge.calls + forward.calls == before
    (fa,), (fb,) = a.grads, b.grads
    assert [v.name for v in fa.trace] == ["a", "s", "f", "loss"]
    assert [v.name for v in fb.trace] == ["b", "f", "loss"]
    assert fa.text == "wrong: expected 3"
    assert q.grads == []


def test_trace_backward_on_a_large_graph_is_linear():
    x = tg.Parameter("seed", name="seed")
    node = x
    for i in range(2000):
        node = tg.concat(node, str(i))
    node.backward("too long", propagator=tg.TracePropagator())
    assert len(x.grads[0].trace) == 2001  # seed + every concat output, no leaf strings
