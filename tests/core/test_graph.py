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
