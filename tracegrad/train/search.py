"""Merge: one candidate from two Pareto-front specialists (GEPA's system-aware merge).

Two candidates that each win on examples the other loses have each found something.
For a program with several parameters, each usually changed different ones: take every
parameter from the candidate that changed it. Where both changed the same parameter,
ask the optimizer to merge the two values (``optimizer.merge``), or, without that, keep
the value of the better candidate. The result is one more proposal of the step, scored
and gated like the others.

The optimizer is told how many validation examples each version wins, never which:
validation examples are held out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from .pool import Candidate, Pool, candidate

__all__ = ["MergeResult", "propose_merge"]


@dataclass
class MergeResult:
    """Quacks like an optimizer's step result, so the gate handles a merge like a proposal."""

    calls: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    updated: dict[str, Any] = field(default_factory=dict)

    def revert(self) -> None:
        """A merge changes no optimizer state: nothing to undo."""


def _edge(a: Candidate, b: Candidate) -> tuple[int, int]:
    common = [i for i in a["scores"] if i in b["scores"]]
    return (sum(a["scores"][i] > b["scores"][i] for i in common),
            sum(b["scores"][i] > a["scores"][i] for i in common))


def _pick_pair(pool: Pool, tried: set[tuple[str, str]],
               rng: random.Random) -> tuple[Candidate, Candidate] | None:
    """The untried front pair that complement each other most (each wins somewhere)."""
    front = pool.front()
    pairs = []
    for i, a in enumerate(front):
        for b in front[i + 1:]:
            key = tuple(sorted((a["hash"], b["hash"])))
            wa, wb = _edge(a, b)
            if wa and wb and key not in tried:
                pairs.append((wa * wb, rng.random(), a, b))
    if not pairs:
        return None
    _, _, a, b = max(pairs, key=lambda t: (t[0], t[1]))
    return a, b


def propose_merge(pool: Pool, optimizer: Any, named: dict[str, Any], initial: dict[str, Any],
                  step: int,
                  tried: set[tuple[str, str]], seen: set[str], rng: random.Random,
                  sample_id: str | None = None) -> tuple[MergeResult, dict[str, Any],
                                                          Candidate] | None:
    """A merged proposal ``(result, values, candidate)``, or None when there is no pair
    worth merging or the merge gives nothing new."""
    pair = _pick_pair(pool, tried, rng)
    if pair is None:
        return None
    a, b = pair
    tried.add(tuple(sorted((a["hash"], b["hash"]))))  # type: ignore[arg-type]
    res = MergeResult()
    wa, wb = _edge(a, b)
    better = a if (a["score"] or 0) >= (b["score"] or 0) else b
    state: dict[str, Any] = {}
    for name in a["state"]:
        va, vb = a["state"][name], b["state"].get(name, a["state"][name])
        if va == vb or vb == initial.get(name):
            state[name] = va
        elif va == initial.get(name):
            state[name] = vb
        elif callable(getattr(optimizer, "merge", None)):
            value, calls, events = optimizer.merge(
                named[name], va, vb, f"the better of the two on {wa} validation examples",
                f"the better of the two on {wb} validation examples", sample_id=sample_id)
            res.calls += calls
            res.events += events
            state[name] = value if value is not None else better["state"][name]
        else:
            state[name] = better["state"][name]
    cand = candidate(f"c{step}.m", step, a["id"], state)
    res.events.append({"event": "merge", "detail": f"{a['id']} + {b['id']}",
                       "from": [a["id"], b["id"]]})
    if cand["hash"] in seen or cand["hash"] in (a["hash"], b["hash"]):
        res.events.append({"event": "merge_duplicate", "detail": "the merge equals a known "
                           "candidate; not scored"})
        return None
    res.updated = {k: v for k, v in state.items() if v != a["state"].get(k)}
    return res, state, cand
