import networkx as nx

import tracegrad as tg
from tracegrad.testing import MockLLM


def five_node_graph():
    engine = MockLLM(default="4")
    system = tg.Parameter("Count the objects.", role="system prompt", name="system")
    q = tg.Variable("a violin and three pianos", role="question", name="question")
    prompt = tg.format("Question: {{ q }}", q=q)
    prompt.name = "prompt"
    answer = tg.LLMCall(engine, system=system)(prompt)
    answer.name = "answer"
    loss = tg.MetricLoss(lambda p, e: p == e)(answer, "4")
    loss.name = "loss"
    return loss


def test_graph_is_a_networkx_digraph_with_five_nodes():
    g = tg.graph(five_node_graph())
    assert isinstance(g, nx.DiGraph)
    assert set(g.nodes) == {"system", "question", "prompt", "answer", "loss"}
    assert g.number_of_edges() == 4
    assert g.has_edge("system", "answer") and g.has_edge("answer", "loss")
    assert g.nodes["system"]["trainable"] is True
    assert g.nodes["loss"]["objective"] is True


def test_dot_and_mermaid_export():
    g = tg.graph(five_node_graph())
    dot = g.to_dot()
    assert dot.startswith("digraph") and '"system" -> "answer";' in dot
    assert dot.count("->") == g.number_of_edges()
    mer = g.to_mermaid()
    assert mer.startswith("flowchart LR")
    assert "n_system --> n_answer" in mer
    assert mer.count("-->") == g.number_of_edges()


def test_json_roundtrip_is_equal():
    g = tg.graph(five_node_graph())
    g2 = tg.Graph.from_json(g.to_json())
    assert g.same_as(g2)
    assert nx.utils.graphs_equal(g, g2)


def _batch_requests(creation_order):
    """The backward and trace-optimizer requests of a two-example batch whose nodes were
    created in ``creation_order`` (as examples on several threads create them)."""
    system = tg.Parameter("Count the objects.", role="system prompt", name="system")
    losses = {}
    for i in creation_order:
        q = tg.Variable(f"question {i}", role="question")  # auto-named, as in a user's program
        out = tg.LLMCall(MockLLM(default=str(i)), system=system)(q)
        losses[i] = tg.MetricLoss(lambda p, e: (0.0, f"wrong: {p}"))(out, "9")
    batch = tg.aggregate([losses[0], losses[1]])  # the batch is in dataset order
    backward = MockLLM(default='{"system": "count again", "input": "clearer"}')
    batch.backward(propagator=tg.TextualPropagator(backward))
    trace_opt = MockLLM(default='{"reasoning": "r", "values": {}}')
    tg.TraceOptimizer([system], engine=trace_opt).step()
    return backward.texts() + trace_opt.texts()


def test_requests_do_not_depend_on_the_order_nodes_were_created_in():
    """Auto names numbered by a process-wide counter reached the requests, so two
    identical runs sent different requests and the second missed the cache (issue 14 s6)."""
    a, b = _batch_requests([0, 1]), _batch_requests([1, 0])
    assert a == b
    assert "llm_call1" in "".join(a) and "llm_call2" in "".join(a)  # named by graph position
