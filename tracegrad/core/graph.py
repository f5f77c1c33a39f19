"""Export the traced graph: networkx for analysis, DOT and Mermaid for pictures, JSON for files."""

from __future__ import annotations

import json
from typing import Any

import networkx as nx

from .shorten import shorten
from .variable import Parameter, Variable, topo_order


class Graph(nx.DiGraph):
    """A DiGraph of variables (nodes) with edges parent -> child, plus exporters."""

    def to_dot(self) -> str:
        lines = ["digraph tracegrad {", "  rankdir=LR;", '  node [fontname="Helvetica"];']
        for n, d in self.nodes(data=True):
            shape = "box" if d.get("trainable") else ("diamond" if d.get("objective") else "ellipse")
            style = ',style=filled,fillcolor="#fde68a"' if d.get("trainable") else ""
            label = f"{d.get('name', n)}\\n{_esc(d.get('op') or d.get('kind', ''))}"
            lines.append(f'  "{_esc(n)}" [label="{label}",shape={shape}{style}];')
        for a, b in self.edges():
            lines.append(f'  "{_esc(a)}" -> "{_esc(b)}";')
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_mermaid(self) -> str:
        lines = ["flowchart LR"]
        for n, d in self.nodes(data=True):
            label = f"{d.get('name', n)}<br/>{d.get('op') or d.get('kind', '')}".replace('"', "'")
            if d.get("trainable"):
                lines.append(f'  {_mid(n)}["{label}"]:::param')
            elif d.get("objective"):
                lines.append(f'  {_mid(n)}{{"{label}"}}')
            else:
                lines.append(f'  {_mid(n)}("{label}")')
        for a, b in self.edges():
            lines.append(f"  {_mid(a)} --> {_mid(b)}")
        lines.append("  classDef param fill:#fde68a,stroke:#b45309;")
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        data = {
            "nodes": [{"id": n, **d} for n, d in self.nodes(data=True)],
            "edges": [[a, b] for a, b in self.edges()],
        }
        return json.dumps(data, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Graph:
        data = json.loads(text)
        g = cls()
        for node in data["nodes"]:
            node = dict(node)
            g.add_node(node.pop("id"), **node)
        g.add_edges_from((a, b) for a, b in data["edges"])
        return g

    def same_as(self, other: nx.DiGraph) -> bool:
        return dict(self.nodes(data=True)) == dict(other.nodes(data=True)) and set(
            self.edges()
        ) == set(other.edges())


def _esc(s: Any) -> str:
    return str(s).replace("\\", "\\\\").replace('"', '\\"')


def _mid(n: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in str(n))


def graph(root: Variable, value_limit: int = 200) -> Graph:
    """The graph reachable from ``root`` as a networkx DiGraph (node key: variable name)."""
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
