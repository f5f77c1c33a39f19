"""Accept or revert a proposal: a pure function of scores, so it is tested without a run.

A textual step can easily make things worse, so every proposal is scored (on the
validation set, or on the minibatch when there is none) and kept only if the gate
says so:

- ``non-decrease`` keeps a proposal that does not score below its parent (the default:
  a rewrite that is as good may generalise better, and ties let the search move);
- ``improve`` keeps only a strict improvement;
- ``minibatch`` pre-checks on the batch and pays for full validation only if the
  proposal did not get worse there (GEPA's trick); otherwise as ``non-decrease``;
- ``none`` keeps everything (plain TextGrad).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GATES", "Verdict", "decide", "needs_validation"]

GATES = ("non-decrease", "improve", "minibatch", "none")


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str


def needs_validation(gate: str, parent_minibatch: float, minibatch: float | None) -> bool:
    """Whether a proposal is worth its full validation run (the ``minibatch`` pre-check)."""
    return not (gate == "minibatch" and minibatch is not None and minibatch < parent_minibatch)


def decide(
    gate: str,
    where: str,
    base: float,
    score: float | None,
    parent_minibatch: float,
    minibatch: float | None,
) -> Verdict:
    """The verdict on a proposal scoring ``score`` against its parent's ``base``.

    ``score`` is None when the minibatch pre-check ruled the proposal out.
    """
    if score is None:
        return Verdict(
            False,
            f"minibatch pre-check: {parent_minibatch:.3f} -> {minibatch:.3f}; "
            "full validation skipped",
        )
    moved = f"{where} {base:.3f} -> {score:.3f}"
    if gate == "none":
        return Verdict(True, f"{moved} (no gate)")
    if gate == "improve":
        ok = score > base
        return Verdict(ok, moved + ("" if ok else " (not an improvement)"))
    ok = score >= base
    return Verdict(ok, moved + ("" if ok else " (dropped)"))
