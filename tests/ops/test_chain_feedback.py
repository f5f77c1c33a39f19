"""Issue 15 s1: feedback through a chain of functions is bounded per node (it grew by a note
at every hop: n^2 characters stored through an n-function chain)."""

from __future__ import annotations

import tracegrad as tg
from tracegrad.backward import TextualPropagator
from tracegrad.ops.python import FEEDBACK_LIMIT
from tracegrad.testing import MockLLM


@tg.op
def inc(x: int) -> int:
    return x + 1


def test_feedback_through_a_long_chain_stays_bounded_and_keeps_its_verdict():
    p = tg.Parameter(0, role="start", name="p")
    v, nodes = p, []
    for _ in range(500):
        v = inc(v)
        nodes.append(v)
    v.backward("The result is too small.", propagator=TextualPropagator(engine=MockLLM(["x"])))
    assert p.grads and all(len(g.text) <= FEEDBACK_LIMIT for g in p.grads)
    assert all(len(g.text) <= FEEDBACK_LIMIT for n in nodes for g in n.grads)
    text = p.grads[0].text
    assert text.startswith("The result is too small.")  # the verdict survives the cut
    assert "went into the function inc" in text  # and the hops nearest the input
