"""Bootstrapping few-shot demos from the examples the program already gets right.

Each step's minibatch is run anyway; the correct ones show, for every :class:`Demos`
parameter, what its step was given and what it answered (:func:`offer_successes`). A
demos proposal (:func:`propose_demos`) fills free slots with such successes, or, once
the list is full, swaps one demo for a new success. It is one more proposal of the
step, scored and gated like a rewrite, so a demo that does not help is never kept.
Successes come from training minibatches only: validation examples stay held out.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from ..core.demos import Demos
from ..core.variable import Variable, topo_order
from .pool import Candidate, candidate
from .results import Outcome
from .search import MergeResult

__all__ = ["offer_successes", "propose_demos"]


def _step_of(output: Variable, demos: Demos) -> tuple[str, str] | None:
    """(what the step ``demos`` configures was given, what it answered), from one run."""
    for node in topo_order(output):
        op = node.op
        if op is None or not any(v is demos for v in op.inputs.values()):
            continue
        messages = getattr(op, "messages", None)
        if messages:  # an LLM call: the last message is the real input, after the demos
            content = messages[-1].get("content")
            given = content if isinstance(content, str) else str(content)
        else:  # demos rendered into a template: the other fields are the input
            given = " | ".join(v.text for v in op.inputs.values()
                               if v is not demos and not isinstance(v, Demos))
            node = output  # the program's answer is what the demo should show
        return given, node.text
    return None


def offer_successes(outcomes: Iterable[Outcome]) -> None:
    """Offer each correct example's step input and output to the demos in its graph."""
    for o in outcomes:
        if o.score < 1.0 or o.output_var is None or o.crashed:
            continue
        for v in topo_order(o.output_var):
            if isinstance(v, Demos) and v.requires_grad:
                io = _step_of(o.output_var, v)
                if io is not None:
                    v.offer(*io)


def _new_value(d: Demos, current: list[Any], step: int, rng: random.Random) -> list[Any] | None:
    unused = [c for c in d.unused() if c not in current]
    if not unused:
        return None
    free = d.max_demos - len(current)
    if free > 0:
        return [*current, *rng.sample(unused, min(free, len(unused)))]
    if step % 2:  # a full list is varied every other step: each swap costs a validation
        return None
    out = list(current)
    out[rng.randrange(len(out))] = rng.choice(unused)
    return out


def propose_demos(named: dict[str, Any], parent: Candidate, step: int, seen: set[str],
                  rng: random.Random, events: list[dict[str, Any]]
                  ) -> list[tuple[MergeResult, dict[str, Any], Candidate]]:
    """A proposal that changes only demos (filled or one swapped), or none; its events
    go to the step record's ``events``."""
    state = dict(parent["state"])
    res = MergeResult()
    for name, p in named.items():
        if not isinstance(p, Demos) or not p.requires_grad:
            continue
        new = _new_value(p, list(state.get(name) or []), step, rng)
        if new is not None:
            state[name] = new
            res.updated[name] = new
            res.events.append({"event": "demos_bootstrapped", "param": name,
                               "detail": f"{len(new)} demos from correct training examples"})
    if not res.updated:
        return []
    cand = candidate(f"c{step}.d", step, parent["id"], state)
    if cand["hash"] in seen:
        return []
    events.extend(res.events)
    return [(res, state, cand)]
