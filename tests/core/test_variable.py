import gc
import weakref

import tracegrad as tg
from tracegrad.core.variable import generations, topo_order
from tracegrad.testing import MockLLM


def test_feedback_is_deduplicated_and_ordered():
    v = tg.Variable("x")
    v.add_feedback("too long", source="a")
    v.add_feedback("too long", source="a")
    v.add_feedback("too long", source="b")
    v.add_feedback("   ")
    assert [(g.text, g.source) for g in v.grads] == [("too long", "a"), ("too long", "b")]


def test_requires_grad_propagates_only_from_trainable_inputs():
    p = tg.Parameter("Be brief.", role="system prompt")
    frozen = tg.Parameter("frozen", requires_grad=False)
    a = tg.concat(p, "x")
    b = tg.concat(frozen, "y")
    assert a.requires_grad and not b.requires_grad
    assert a.parents[0] is p


def test_no_grad_records_nothing():
    p = tg.Parameter("hello")
    with tg.no_grad():
        out = tg.concat(p, "world")
    assert out.parents == () and out.op is None
    out2 = tg.concat(p, "world")
    assert out2.parents and out2.op is not None


def test_generations_put_consumers_first():
    a = tg.Parameter("a")
    b = tg.concat(a, "b")
    c = tg.concat(a, b)  # a feeds c directly and through b
    gens = generations(c)
    level = {v.name: i for i, g in enumerate(gens) for v in g}
    assert level[c.name] == 0 and level[b.name] == 1 and level[a.name] == 2
    assert [v.name for v in topo_order(c)][-1] == c.name


def test_dropping_the_loss_frees_the_graph():
    """No global registry: 1,000 iterations leave no node of old graphs alive."""
    engine = MockLLM(default="42")
    system = tg.Parameter("Answer.", role="system prompt")
    call = tg.LLMCall(engine, system=system)
    refs = []
    for i in range(1000):
        out = call(f"question {i}")
        loss = tg.MetricLoss(lambda p, e: 0.0)(out, "41")
        refs.append(weakref.ref(loss))
        refs.append(weakref.ref(out))
        del out, loss
    gc.collect()
    alive = sum(1 for r in refs if r() is not None)
    assert alive == 0
    assert system.grads == []


def test_module_parameters_and_state_dict_roundtrip():
    engine = MockLLM()

    class Pipe(tg.Module):
        def __init__(self):
            self.first = tg.LLMCall(engine, system=tg.Parameter("one", role="first"))
            self.frozen = tg.Parameter("fixed", requires_grad=False)
            self.steps = [tg.Parameter(3, role="a number")]

        def forward(self, x):
            return self.first(x)

    m = Pipe()
    names = dict(m.named_parameters())
    assert set(names) == {"first.system", "frozen", "steps.0"}
    assert [p.value for p in m.parameters()] == ["one", 3]
    state = m.state_dict()
    m.first.system.value = "changed"
    m.load_state_dict(state)
    assert m.first.system.value == "one"
    try:
        m.load_state_dict({"nope": 1})
    except KeyError as e:
        assert "nope" in str(e)
    else:
        raise AssertionError("strict load_state_dict accepted an unknown key")
