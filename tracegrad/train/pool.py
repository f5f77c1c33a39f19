"""The candidate pool: the parameter values a run has kept, and which one a step starts from.

A candidate is plain JSON (it is saved in ``state.json`` after every step). The pool keeps
the ``size`` best-scoring candidates, and always the current one and the newest, so a
resumed run and the report see the same lineage. A step's parent is the current
candidate, or -- with ``pareto`` -- one drawn GEPA-style from the candidates that are best
on at least one example, so a prompt that alone solves a hard case is not lost to one
with a better mean.
"""

from __future__ import annotations

import random
from typing import Any, TypedDict

from .runs import state_hash

__all__ = ["Candidate", "Pool", "candidate"]


class Candidate(TypedDict):
    id: str
    step: int
    parent: str | None
    state: dict[str, Any]
    hash: str
    score: float | None
    scores: dict[str, float]


def candidate(
    cid: str,
    step: int,
    parent: str | None,
    state: dict[str, Any],
    score: float | None = None,
    scores: dict[str, float] | None = None,
) -> Candidate:
    return {
        "id": cid,
        "step": step,
        "parent": parent,
        "state": dict(state),
        "hash": state_hash(state),
        "score": score,
        "scores": dict(scores or {}),
    }


class Pool:
    """The kept candidates; ``entries`` and ``current_id`` are what a checkpoint saves."""

    def __init__(self, size: int, entries: list[Candidate], current_id: str = "c0",
                 keep_front: bool = False) -> None:
        self.size = size
        self.entries = entries
        self.current_id = current_id
        # with Pareto selection the specialists are the point: a trim by mean score
        # would drop the candidate that alone solves a hard example
        self.keep_front = keep_front

    def current(self) -> Candidate:
        return next(e for e in self.entries if e["id"] == self.current_id)

    def best(self) -> Candidate:
        """The highest score; the later candidate on a tie (it was accepted over the other)."""
        scored = [e for e in self.entries if e["score"] is not None]
        if not scored:
            return self.current()
        return max(scored, key=lambda e: (e["score"], e["step"]))

    def add(self, entry: Candidate) -> None:
        self.entries.append(entry)
        keep = sorted(
            self.entries,
            key=lambda e: (e["score"] if e["score"] is not None else -1, e["step"]),
            reverse=True,
        )[: self.size]
        kept_ids = {e["id"] for e in keep} | {entry["id"], self.current_id}
        if self.keep_front:
            kept_ids |= {e["id"] for e in self.front()}
        self.entries = [e for e in self.entries if e["id"] in kept_ids]

    def front(self) -> list[Candidate]:
        """Candidates with per-example scores that are best on at least one example and
        not dominated by another."""
        return _front([e for e in self.entries if e["scores"]])[0]

    def offer(self, entry: Candidate) -> bool:
        """Keep a candidate that lost the gate if it joins the Pareto front; True if kept."""
        if any(e["hash"] == entry["hash"] for e in self.entries):
            return False
        front, _ = _front([e for e in (*self.entries, entry) if e["scores"]])
        if all(e is not entry for e in front):
            return False
        self.add(entry)
        return any(e["id"] == entry["id"] for e in self.entries)

    def parent(self, pareto: bool, rng: random.Random) -> Candidate:
        return self.pareto_parent(rng) if pareto else self.current()

    def pareto_parent(self, rng: random.Random) -> Candidate:
        """A candidate on the Pareto front of per-example scores, weighted by its wins."""
        entries = [e for e in self.entries if e["scores"]]
        if len(entries) < 2:
            return self.current()
        front, wins = _front(entries)
        if not front:
            return self.current()
        return rng.choices(front, weights=[wins.get(e["id"], 1) for e in front])[0]


def _front(entries: list[Candidate]) -> tuple[list[Candidate], dict[str, int]]:
    """The Pareto front of ``entries`` (each best somewhere, none dominated), and the wins."""
    wins = _wins(entries)
    return [e for e in entries if wins.get(e["id"]) and not _dominated(e, entries)], wins


def _wins(entries: list[Candidate]) -> dict[str, int]:
    """For each candidate, on how many examples it has the top score.

    Only examples the candidates disagree on count: one every candidate gets equally
    right says nothing about who is a specialist, and counting it (as ties for all) gave
    every candidate about the same weight, so parents were drawn almost uniformly from the
    front and most steps improved a weaker candidate. A candidate that ties everywhere
    still counts one win, so it stays on the front.
    """
    wins: dict[str, int] = {}
    shared: list[str] = []
    for i in sorted({i for e in entries for i in e["scores"]}):
        have = [e for e in entries if i in e["scores"]]
        top = max(e["scores"][i] for e in have)
        best = [e for e in have if e["scores"][i] == top]
        if len(best) == len(have):
            shared += [e["id"] for e in have]
            continue
        for e in best:
            wins[e["id"]] = wins.get(e["id"], 0) + 1
    for cid in shared:
        wins.setdefault(cid, 1)
    return wins


def _dominated(a: Candidate, entries: list[Candidate]) -> bool:
    """Some other candidate is at least as good on every shared example and better on one."""
    for b in entries:
        if b is a:
            continue
        common = [i for i in a["scores"] if i in b["scores"]]
        if (
            common
            and all(b["scores"][i] >= a["scores"][i] for i in common)
            and any(b["scores"][i] > a["scores"][i] for i in common)
        ):
            return True
    return False
