"""Accept or revert a proposal: a pure function of scores, so it is tested without a run.

A textual step can easily make things worse, so every proposal is scored (on the
validation set, or on the minibatch when there is none) and kept only if the gate
says so:

- ``non-decrease`` keeps a proposal that does not score below its parent (the default:
  a rewrite that is as good may generalise better, and ties let the search move);
- ``improve`` keeps only a strict improvement;
- ``minibatch`` pre-checks on the batch and pays for full validation only if the
  proposal did not get worse there (GEPA's trick); otherwise as ``non-decrease``;
- ``minibatch-improve`` pays for validation only if the proposal did strictly better on
  the batch (GEPA's acceptance test; a rewrite that changes nothing the batch can see
  is not worth its validation run), then as ``non-decrease``;
- ``none`` keeps everything (plain TextGrad).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GATES", "PRECHECKED", "Verdict", "decide", "needs_validation"]

GATES = ("non-decrease", "improve", "minibatch", "minibatch-improve", "none")
PRECHECKED = ("minibatch", "minibatch-improve")  # gates that score the batch first


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str


def needs_validation(gate: str, parent_minibatch: float, minibatch: float | None) -> bool:
    """Whether a proposal is worth its full validation run (the ``minibatch`` pre-check)."""
    if minibatch is None:
        return True
    if gate == "minibatch":
        return minibatch >= parent_minibatch
    if gate == "minibatch-improve":
        return minibatch > parent_minibatch
    return True


def decide(
    gate: str,
    where: str,
    base: float,
    score: float | None,
    parent_minibatch: float,
    minibatch: float | None,
    stopped: tuple[int, int] | None = None,
) -> Verdict:
    """The verdict on a proposal scoring ``score`` against its parent's ``base``.

    ``score`` is None when the minibatch pre-check ruled the proposal out. ``stopped``:
    ``(scored, of)`` when validation stopped early, once it could no longer pass; then
    ``score`` is the bound it could at most have reached.
    """
    if stopped is not None:
        return Verdict(False, f"{where} {base:.3f} -> at most {score:.3f}: stopped after "
                       f"{stopped[0]} of {stopped[1]} examples, when it could no longer pass")
    if score is None:
        return Verdict(
            False,
            f"minibatch pre-check: {parent_minibatch:.3f} -> {minibatch:.3f}; "
            "full validation skipped",
        )
    moved = f"{where} {base:.3f} -> {score:.3f}"
    if gate == "none":
        return Verdict(True, f"{moved} (no gate)")
    if gate == "improve" or (gate == "minibatch-improve" and where == "minibatch"):
        ok = score > base
        return Verdict(ok, moved + ("" if ok else " (not an improvement)"))
    ok = score >= base
    return Verdict(ok, moved + ("" if ok else " (dropped)"))
