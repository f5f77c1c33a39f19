"""The options of a training run, declared once.

``Trainer``, ``optimize()`` and the CLI all take these; they used to repeat the list and
had drifted apart (an option existed on one side only). A wrong value is refused here,
before any file is read or any engine is called.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.variable import Parameter
from ..llm.limits import DEFAULT_MAX_CONCURRENCY
from .gate import GATES

__all__ = ["TrainOptions", "signature_with_options"]


@dataclass(frozen=True)
class TrainOptions:
    """Every option of ``optimize()`` / ``Trainer`` (see :func:`tracegrad.optimize`).

    - ``metric``: a metric name ("exact_match") or a callable returning a score or
      ``(score, explanation)``.
    - ``optimizer``: "tgd", "tgd-batched", "trace", "opro", an optimizer class or instance.
    - ``parameters``: the trainable parameters, when ``program`` is a plain function.
    - ``steps`` / ``epochs``: how long to run (``epochs`` wins when given).
    - ``batch_size``: examples per step; ``seed`` fixes every sampling decision.
    - ``budget``: a ``tg.Budget``, a dict of its fields or a dollar amount.
    - ``engine`` / ``optimizer_engine``: the task and optimizer engines when the program
      does not hold them; ``concurrency`` bounds parallel calls.
    - ``run_dir``: where the run is written (``False``: nowhere); ``resume``: a run
      directory to continue.
    - ``gate``: one of :data:`~tracegrad.train.gate.GATES`; ``patience``: stop after this
      many steps without a new best; ``pool_size``: candidates kept; ``pareto``: draw
      each step's parent from the Pareto front; ``beam``: proposals per step.
    - ``positive_examples``: correct examples shown to backward as "keep this".
    - ``progress``: the live table on stderr; ``on_step``: called with each step's record.
    - ``config``: extra JSON recorded in ``config.json``.
    - ``input_fields`` / ``output_field``: how dataset rows map to inputs and answer.
    - ``feedback_limit``: characters of feedback the optimizer sees per summary.
    - ``merge``: also propose, each step, a merge of two Pareto-front candidates that win
      on different examples (needs an optimizer with ``merge``, e.g. ``reflect``).
    - ``task``: what the program is for, shown at the top of every update request;
      ``"auto"`` takes a prompt file's description and output field, or the program's
      docstring. Off by default: on the SIMULATED quality benchmark (30 seeds) it did not
      help, which that benchmark cannot measure fairly (its stand-in ignores the task).
    - ``batch_eval``: True or a :class:`~tracegrad.llm.batch.BatchOptions`: the baseline
      and full validations go through the provider's Batch API (half price, up to the
      provider's window); minibatches, feedback and rewrites stay live. The batch journal
      is kept in the run directory, so a resumed run polls the same batches.
    - ``max_metric_calls``: stop once this many examples have been scored (rollouts),
      checked between steps; GEPA's unit of budget.
    """

    metric: Any
    optimizer: Any = "tgd"
    parameters: Iterable[Parameter] | Mapping[str, Parameter] | None = None
    steps: int = 10
    epochs: int | None = None
    batch_size: int = 8
    budget: Any = None
    engine: Any = None
    optimizer_engine: Any = None
    run_dir: str | Path | None | bool = None
    resume: str | Path | None = None
    seed: int = 0
    concurrency: int = DEFAULT_MAX_CONCURRENCY
    gate: str = "non-decrease"
    patience: int | None = None
    pool_size: int = 3
    pareto: bool = False
    beam: int = 1
    positive_examples: int = 2
    progress: bool = True
    on_step: Callable[[dict[str, Any]], Any] | None = None
    config: Mapping[str, Any] | None = field(default=None)
    input_fields: Sequence[str] | None = None
    output_field: str | None = None
    feedback_limit: int = 4000
    merge: bool = False
    task: str | None = None
    max_metric_calls: int | None = None
    batch_eval: Any = None

    def __post_init__(self) -> None:
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {', '.join(GATES)}, got {self.gate!r}")
        for name, lo in (
            ("batch_size", 1),
            ("beam", 1),
            ("pool_size", 1),
            ("concurrency", 1),
            ("steps", 0),
            ("positive_examples", 0),
            ("feedback_limit", 1),
        ):
            _check_int(name, getattr(self, name), lo)
        for name in ("epochs", "patience", "max_metric_calls"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 0 if name == "patience" else 1)
        if isinstance(self.budget, float) and not math.isfinite(self.budget):
            raise ValueError(f"budget must be a finite dollar amount, got {self.budget!r}")


def _check_int(name: str, v: Any, lo: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")


def signature_with_options(fn: Callable[..., Any], leading: int) -> inspect.Signature:
    """``fn``'s first ``leading`` parameters followed by every option, keyword-only.

    ``help(optimize)`` and editors then show the options and their defaults although
    the function takes ``**options``.
    """
    own = list(inspect.signature(fn).parameters.values())[:leading]
    opts = [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default,
            annotation=f.type,
        )
        for f in dataclasses.fields(TrainOptions)
    ]
    return inspect.Signature(own + opts)
