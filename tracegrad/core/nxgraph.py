"""The networkx graph of a trace, with its exporters (imported only when one is built)."""

from __future__ import annotations

import json

import networkx as nx

from .graph import _esc, _mid


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
