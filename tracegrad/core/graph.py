"""Export the traced graph: networkx for analysis, DOT and Mermaid for pictures, JSON for files.

networkx takes a fifth of ``import tracegrad``; it is imported when a graph is first built
(:mod:`.nxgraph` holds the class), so a run that never exports one never pays for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .shorten import shorten
from .variable import Parameter, Variable, topo_order

if TYPE_CHECKING:
    from .nxgraph import Graph


def _esc(s: Any) -> str:
    return str(s).replace("\\", "\\\\").replace('"', '\\"')


def _mid(n: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in str(n))


def graph(root: Variable, value_limit: int = 200) -> Graph:
    """The graph reachable from ``root`` as a networkx DiGraph (node key: variable name)."""
    from .nxgraph import Graph

    g = Graph()
    for v in topo_order(root):
        g.add_node(
            v.name,
            name=v.name,
            role=v.role,
            kind=type(v).__name__,
            value=shorten(v.value, value_limit),
            trainable=bool(isinstance(v, Parameter) and v.requires_grad),
            objective=v.is_objective,
            op=v.op.name if v.op else "",
        )
        for p in v.parents:
            g.add_edge(p.name, v.name)
    return g


def __getattr__(name: str) -> Any:
    if name == "Graph":
        from .nxgraph import Graph

        return Graph
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
