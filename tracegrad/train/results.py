"""What a run returns: one scored example, an evaluation, a whole optimization."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.shorten import shorten
from ..core.variable import Variable
from ..redaction import scrub
from .data import Example

__all__ = ["ITEM_LIMIT", "EvalResult", "OptimizeResult", "Outcome", "new_step_record"]

ITEM_LIMIT = 600  # one example's feedback, in history and in the optimizer's summary


@dataclass
class Outcome:
    """One example run through the pipeline and scored."""

    example: Example
    score: float
    explanation: str
    output: Any = None
    error: str | None = None
    crashed: bool = False
    output_var: Variable | None = field(default=None, repr=False)
    loss: Variable | None = field(default=None, repr=False)

    def feedback(self, limit: int = ITEM_LIMIT) -> str:
        inputs = shorten(self.example.inputs, 200)
        return shorten(f"[{self.example.id}] input {inputs}: {self.explanation}", limit)

    def to_dict(self) -> dict[str, Any]:
        return scrub({
            "id": self.example.id,
            "score": self.score,
            "explanation": self.explanation,
            "output": shorten(self.output, 2000) if self.output is not None else None,
            "error": self.error,
        })


@dataclass
class EvalResult:
    score: float
    outcomes: list[Outcome]
    batch: dict[str, Any] | None = None  # with batch=: batches, lines, failures, retries

    @property
    def scores(self) -> dict[str, float]:
        return {o.example.id: o.score for o in self.outcomes}

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.score < 1.0]


@dataclass
class OptimizeResult:
    best_state: dict[str, Any]
    best_score: float | None
    baseline_score: float | None
    final_score: float | None
    history: list[dict[str, Any]]
    run_dir: Path | None
    usage: dict[str, Any]
    stopped_reason: str
    steps_done: int

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-able data, scrubbed of secrets: it is made to be saved or
        printed, and the history quotes model outputs (which may echo the API key)."""
        d = asdict(self)
        d["run_dir"] = str(self.run_dir) if self.run_dir else None
        return scrub(d)

    def summary(self) -> str:
        def f(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.3f}"

        usd = (self.usage.get("total") or {}).get("usd")
        cost = f", ${usd:.4f}" if isinstance(usd, int | float) else ""
        return (
            f"{self.steps_done} step{'' if self.steps_done == 1 else 's'} ({self.stopped_reason}): score {f(self.baseline_score)}"
            f" -> best {f(self.best_score)}{cost}"
            + (f"; run in {self.run_dir}" if self.run_dir else "")
        )


def new_step_record(step: int, parent: Mapping[str, Any], batch: list[Example]) -> dict[str, Any]:
    """A step's history line before anything has happened in it."""
    return {
        "step": step,
        "parent": parent["id"],
        "batch": [ex.id for ex in batch],
        "train_score": None,
        "val_score": None,
        "candidate_train_score": None,
        "parent_score": parent["score"],
        "accepted": False,
        "reverted": False,
        "result": "",
        "reason": "",
        "candidate": None,
        "proposed": {},
        "feedback": [],
        "events": [],
        "calls": {"backward": 0, "optimizer": 0},
    }
