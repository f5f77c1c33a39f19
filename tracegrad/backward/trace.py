"""The trace propagator: zero LLM calls.

Every trainable parameter receives the loss's feedback together with the minimal
subgraph that connects it to the loss (its descendants that are also ancestors of the
loss, in topological order). A whole-trace optimizer renders that subgraph as a listing.
"""

from __future__ import annotations

import time
from collections import deque

from ..core.variable import Feedback, Parameter, Variable, topo_order
from .result import BackwardResult


class TracePropagator:
    def calls_for(self, nodes: int, node_chars: int = 0, *, worst: bool = False) -> int:
        """No LLM call, however many nodes (the same interface as TextualPropagator's)."""
        return 0

    def run(self, root: Variable) -> BackwardResult:
        t0 = time.perf_counter()
        order = topo_order(root)
        index = {v.id: i for i, v in enumerate(order)}
        children: dict[int, list[Variable]] = {}
        for v in order:
            for p in v.parents:
                children.setdefault(p.id, []).append(v)
        text = "\n\n".join(g.text for g in root.grads)
        params = [v for v in order if isinstance(v, Parameter) and v.requires_grad]
        for p in params:
            seen = {p.id}
            queue = deque([p])
            while queue:
                for c in children.get(queue.popleft().id, ()):
                    if c.id not in seen:
                        seen.add(c.id)
                        queue.append(c)
            sub = tuple(sorted((order[index[i]] for i in seen), key=lambda v: index[v.id]))
            p.add_feedback(
                Feedback(
                    text,
                    source=root.name,
                    context={"kind": "trace", "nodes": len(sub)},
                    trace=sub,
                )
            )
        return BackwardResult(calls=0, nodes=len(order), elapsed_s=time.perf_counter() - t0)
