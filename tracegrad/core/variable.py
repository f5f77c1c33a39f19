"""Variable, Parameter and Feedback: the whole autograd core.

A Variable holds a value, the variables it was computed from (``parents``) and the op
record that computed it (``op``). There is no global graph: the graph is whatever is
reachable through ``parents`` from the variable you call ``backward()`` on, and it is
freed when you drop that variable -- as in micrograd.

Where does feedback for my prompt come from? ``loss.backward()`` walks the graph from the
loss towards the leaves (:func:`generations`); for each node the op that produced it
turns the node's feedback (``node.grads``) into feedback for its inputs. Plain ops do that
with string handling (``Op.backward``); LLM ops ask the backward engine
(``tracegrad/backward/textual.py``); the trace propagator makes no call at all and hands
every parameter its subgraph (``tracegrad/backward/trace.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .shorten import render

if TYPE_CHECKING:  # pragma: no cover
    from ..ops.base import Op

_ids = itertools.count(1)


@dataclass
class Feedback:
    """One piece of feedback on a variable: what should change, and where it came from.

    ``context`` is JSON-able (the op, the inputs and output it saw, shortened).
    ``trace`` is filled by the trace propagator: the nodes between the variable and the loss.
    """

    text: str
    source: str = ""
    context: dict[str, Any] = field(default_factory=dict)
    trace: tuple[Variable, ...] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "source": self.source, "context": self.context}


class Variable:
    """A value in a traced pipeline."""

    kind = "variable"

    def __init__(
        self,
        value: Any,
        role: str = "",
        requires_grad: bool = False,
        name: str | None = None,
    ) -> None:
        self.id = next(_ids)
        self.value = value
        self.role = role
        self.requires_grad = requires_grad
        self.name = name or f"{self.kind}{self.id}"
        self._generated = None if name else self.name
        self.name_base = self.kind  # an auto name is this plus a number
        self.position: int | None = None  # index in the last graph backward walked
        self.parents: tuple[Variable, ...] = ()
        self.op: Op | None = None
        self.grads: list[Feedback] = []
        self.is_objective = False
        self.score: float | None = None
        self.error: str | None = None

    @property
    def auto_name(self) -> bool:
        """True while the name is generated (not given, nor assigned since)."""
        return self.name == self._generated

    def set_auto_name(self, base: str, number: int) -> None:
        self.name_base = base
        self.name = self._generated = f"{base}{number}"

    # -- value -----------------------------------------------------------------
    @property
    def text(self) -> str:
        return render(self.value)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        v = self.text
        v = v if len(v) <= 60 else v[:57] + "..."
        return f"{type(self).__name__}({v!r}, name={self.name!r})"

    # -- feedback ----------------------------------------------------------------
    def add_feedback(self, fb: Feedback | str, source: str = "") -> None:
        """Append feedback unless the same text from the same source is already there."""
        if isinstance(fb, str):
            fb = Feedback(fb, source=source)
        if not fb.text or not fb.text.strip():
            return
        for g in self.grads:
            if g.text == fb.text and g.source == fb.source:
                return
        self.grads.append(fb)

    def zero_grad(self) -> None:
        self.grads = []

    @property
    def feedback_text(self) -> str:
        return "\n\n".join(g.text for g in self.grads)

    def backward(
        self,
        feedback: str | None = None,
        *,
        propagator: Any = None,
        engine: Any = None,
    ) -> Any:
        """Propagate feedback from this variable to every variable it depends on.

        An objective (a loss, an execution error) starts from its own value. Any other
        variable needs ``feedback``: what is wrong with it, in words.
        """
        from ..backward import backward, wanted_propagator

        if propagator is None:  # the one the parameters' optimizers need (plain PyTorch form)
            propagator = wanted_propagator(self, engine)
        return backward(self, feedback=feedback, propagator=propagator)

    # -- graph -------------------------------------------------------------------
    def set_parents(self, parents: Iterable[Variable], op: Op) -> None:
        self.parents = tuple(parents)
        self.op = op
        self.requires_grad = any(p.requires_grad for p in self.parents)

    @property
    def is_leaf(self) -> bool:
        return self.op is None


class Parameter(Variable):
    """A trainable leaf: the optimizer may rewrite its value.

    ``kind`` tells the optimizer how to treat the value ("text", "template", "number",
    "json", "code"); it is inferred when not given. ``constraints`` are natural-language
    rules every new value must follow; automatic constraints (placeholders, types,
    signatures) are added by the optimizer from ``kind``.
    """

    kind = "param"

    def __init__(
        self,
        value: Any,
        role: str = "",
        requires_grad: bool = True,
        name: str | None = None,
        *,
        constraints: Iterable[str] = (),
        value_kind: str | None = None,
        value_type: Any = None,
    ) -> None:
        super().__init__(value, role=role, requires_grad=requires_grad, name=name)
        self.constraints = list(constraints)
        self.value_kind = value_kind or infer_kind(value)
        self.value_type = value_type
        self.events: list[dict[str, Any]] = []
        # set by the optimizer that owns it, so a plain backward() knows which propagator
        # that optimizer reads (a weak reference: the optimizer is not kept alive by it)
        self.optimizer_ref: Any = None

    @property
    def trainable(self) -> bool:
        return self.requires_grad


def infer_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "json"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, dict | list):
        return "json"
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        return "template"
    return "text"


# -- graph walks ------------------------------------------------------------------


def topo_order(
    root: Variable | Iterable[Variable], within: Container[int] | None = None
) -> list[Variable]:
    """Every variable reachable from ``root`` (one or several), parents before children.

    ``within`` (a set of variable ids) restricts the walk to a subgraph. Iterative DFS:
    a 10,000-node chain must not hit the recursion limit.
    """
    roots = [root] if isinstance(root, Variable) else sorted(root, key=_walk_key)
    order: list[Variable] = []
    seen: set[int] = set()
    for start in roots:
        stack: list[tuple[Variable, bool]] = [(start, False)]
        while stack:
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if node.id in seen:
                continue
            seen.add(node.id)
            stack.append((node, True))
            for p in reversed(node.parents):
                if p.id not in seen and (within is None or p.id in within):
                    stack.append((p, False))
    return order


def _walk_key(v: Variable) -> tuple[bool, int, int]:
    """Several roots are walked in graph position (set by :func:`name_by_position`), not by
    id: ids count creation across threads, which differs from run to run."""
    return (v.position is None, v.position or 0, v.id)


def name_by_position(root: Variable) -> None:
    """Name every auto-named node of ``root``'s graph by its position in it:
    ``object_counting3`` is the third ``object_counting`` call in graph order.

    The names reach requests (feedback sources, op signatures, trace listings). Numbered
    from the process-wide id counter, which examples on several threads advance in any
    order, they changed from run to run, so an identical re-run missed the cache. Graph
    order follows the inputs' order (the batch's examples in dataset order), so these
    names are the same in every run. Parameters keep their names: optimizers key their
    memory by them.
    """
    counts: dict[str, int] = {}
    for i, node in enumerate(topo_order(root)):
        node.position = i
        if node.auto_name and not isinstance(node, Parameter):
            counts[node.name_base] = counts.get(node.name_base, 0) + 1
            node.set_auto_name(node.name_base, counts[node.name_base])


def generations(root: Variable) -> list[list[Variable]]:
    """Nodes grouped by their longest distance from ``root`` (root first).

    Every consumer of a node sits in an earlier generation, so a generation's nodes
    can receive their feedback concurrently once the previous ones are done.
    """
    order = topo_order(root)
    level: dict[int, int] = {root.id: 0}
    for node in reversed(order):
        lv = level.get(node.id, 0)
        for p in node.parents:
            if level.get(p.id, -1) < lv + 1:
                level[p.id] = lv + 1
    gens: dict[int, list[Variable]] = {}
    for node in order:
        gens.setdefault(level[node.id], []).append(node)
    return [gens[k] for k in sorted(gens)]


def parameters_of(root: Variable) -> list[Parameter]:
    """The trainable parameters a variable depends on, in graph order."""
    return [v for v in topo_order(root) if isinstance(v, Parameter) and v.requires_grad]
