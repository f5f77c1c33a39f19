"""Scoring one step's proposals: the minibatch pre-check, then validation that stops once
a proposal can no longer be kept.

Only the best proposal of a step can be kept, and only if it passes the gate, so each
proposal's validation has a bar: its parent's score at first (strictly above it for
``gate="improve"``), then strictly above the best proposal validated so far (a later
one that only ties is not picked). :meth:`.ScoreCache.score_against` stops a validation
once even a perfect rest could not reach the bar: the verdicts are those of full
scoring, for fewer metric calls. Validation runs in full where every score counts: a
Pareto pool keeps losers that win somewhere, a Batch API round is paid per submission,
and ``gate="none"`` keeps everything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .data import Example
from .evaluate import ScoreCache
from .gate import PRECHECKED, needs_validation
from .options import TrainOptions
from .pool import Candidate

__all__ = ["ProposalScorer"]


class ProposalScorer:
    """Scores the proposals of one step against ``parent``, in the order they come."""

    def __init__(self, scores: ScoreCache, val: Any, opts: TrainOptions,
                 load_values: Callable[[dict[str, Any]], None], parent: Candidate,
                 parent_mb: float, batch: list[Example]) -> None:
        self.scores, self.val, self.opts, self.load_values = scores, val, opts, load_values
        self.parent, self.parent_mb, self.batch = parent, parent_mb, batch
        full = (opts.pareto or opts.batch_eval or opts.gate == "none"
                or parent["score"] is None)
        # (score to reach, strictly), or None: validate in full
        self.bar: tuple[float, bool] | None = None if full else (
            parent["score"], opts.gate == "improve")

    def score(self, cand_state: dict[str, Any], cand: Candidate,
              info: dict[str, Any]) -> tuple[Any, ...]:
        """(minibatch score, gate score or None, notes, split) of one proposal; sets the
        candidate's scores and logs what was scored in ``info``."""
        self.load_values(cand_state)
        gate, mb, mb_scores, mb_notes = self.opts.gate, None, {}, []
        if gate in PRECHECKED or self.val is None:
            mb, mb_scores, mb_notes = self.scores.score("train", self.batch, cand_state)
            info["minibatch"] = mb
        if self.val is not None and needs_validation(gate, self.parent_mb, mb):
            score, scores, notes, stopped = self._validate(cand_state)
            cand["score"], cand["scores"] = score, scores
            info["val"] = score
            if stopped:
                info["val_stopped_after"] = len(scores)
            elif self.bar is not None and (score > self.bar[0] or (
                    score >= self.bar[0] and not self.bar[1])):
                self.bar = (score, True)  # the first best is kept: the next must beat it
            return mb, score, notes, "val"
        if self.val is None:
            cand["score"], cand["scores"] = mb, mb_scores
            return mb, mb, mb_notes, "train"
        info["prechecked_out"] = True
        return mb, None, mb_notes, "train"

    def _validate(self, cand_state: dict[str, Any]) -> tuple[float, dict[str, float],
                                                              list[Any], bool]:
        val = list(self.val)
        if self.bar is None:
            return (*self.scores.score("val", val, cand_state), False)
        return self.scores.score_against("val", val, cand_state, self.parent["scores"],
                                         *self.bar, self.opts.concurrency)
