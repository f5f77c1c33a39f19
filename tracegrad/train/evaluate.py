"""Running a program over examples and scoring it: the part of training that ``evaluate``
shares with ``optimize``.

A failure of the pipeline on one example becomes that example's feedback (score 0 and
the error text), because the optimizer can learn from it. A failure that says nothing
about the example -- the budget ran out, the server kept failing, the machine has no
sandbox -- stops the run instead: scored as 0 it would sway an accept/revert decision.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from ..core import telemetry
from ..core.concurrency import ContextPool
from ..core.context import enable_grad, no_grad
from ..core.feedback import positive_feedback
from ..core.shorten import shorten
from ..core.variable import Variable
from ..llm.base import ConfigurationError, Deferred, LLMError, RetryableError
from ..llm.batch import BatchOptions, run_batched
from ..llm.limits import DEFAULT_MAX_CONCURRENCY
from ..llm.meter import BudgetExceeded
from ..ops.loss import MetricLoss
from ..ops.python import ExecutionError
from ..sandbox import SandboxUnavailable
from .data import Example, load_dataset
from .metrics import get_metric, takes_inputs
from .results import EvalResult, Outcome
from .runs import state_hash

__all__ = [
    "BudgetStop",
    "batch_options",
    "Runner",
    "ScoreCache",
    "evaluate",
    "fail_summary",
    "is_budget_error",
    "mean",
    "positive_losses",
    "raise_if_all_crashed",
    "score_note",
]


class BudgetStop(Exception):
    """The run's own budget check tripped between steps (several meters, one budget)."""


def is_budget_error(e: BaseException) -> bool:
    # by name too: an engine of the user's own may raise its own BudgetExceeded
    return isinstance(e, BudgetExceeded | BudgetStop) or any(
        c.__name__ == "BudgetExceeded" for c in type(e).__mro__
    )


def _stops_the_run(e: BaseException) -> bool:
    """Errors that say nothing about the example being run (see the module doc)."""
    return is_budget_error(e) or isinstance(e, ConfigurationError | RetryableError)


def call_program(program: Callable[..., Any], inputs: dict[str, Any]) -> Any:
    """``program(**inputs)``, run to completion when it is ``async def``.

    An async forward returns a coroutine: scored as it is, it was "wrong" on every example
    ("got '<coroutine object ...>'") and never ran. Examples run on worker threads with no
    event loop, so each is driven by ``asyncio.run`` there (in the example's context).
    """
    out = program(**inputs)
    if inspect.isawaitable(out):
        out = _run_awaitable(out)
    return out


async def _wait(aw: Awaitable[Any]) -> Any:
    return await aw


def _run_awaitable(aw: Awaitable[Any]) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_wait(aw))
    # this thread already runs a loop (called from async code): a loop of its own elsewhere
    with ContextPool(1, "tg-async") as pool:
        return pool.map(lambda a: asyncio.run(_wait(a)), [aw])[0]


def run_example(
    program: Callable[..., Any],
    metric: Callable[[Any, Any], tuple[float, str]],
    metric_name: str,
    ex: Example,
    grad: bool,
) -> Outcome:
    """Run and score one example; pipeline failures become feedback, not exceptions."""
    with enable_grad() if grad else no_grad():
        try:
            out = call_program(program, ex.inputs)
        except ExecutionError as e:
            return Outcome(ex, 0.0, str(e), error=str(e), loss=e.variable if grad else None)
        except Exception as e:  # noqa: BLE001 - one broken example must not end the run
            # SandboxUnavailable: the machine cannot run rewritten code, so every example
            # would fail the same way. The unfinished step is not recorded; a resume redoes it.
            if _stops_the_run(e) or isinstance(e, SandboxUnavailable):
                raise
            msg = f"The pipeline raised {type(e).__name__}: {shorten(str(e), 500)}"
            return Outcome(ex, 0.0, msg, error=msg, crashed=True)
        var = out if isinstance(out, Variable) else Variable(out, role="output of the program")
        return _score(metric, metric_name, ex, var, grad)


def _score(
    metric: Callable[[Any, Any], tuple[float, str]],
    metric_name: str,
    ex: Example,
    var: Variable,
    grad: bool,
) -> Outcome:
    try:
        if takes_inputs(metric):  # a judge needs the question, choice the options
            score, explanation = metric(var.value, ex.expected, inputs=ex.inputs)
        else:
            score, explanation = metric(var.value, ex.expected)
    except Exception as e:
        if _stops_the_run(e) or isinstance(e, Deferred):
            raise  # a judge the server could not reach: as above; or one left for a batch
        if isinstance(e, LLMError):
            msg = f"The metric could not score this output ({type(e).__name__}: {e})."
            return Outcome(ex, 0.0, msg, output=var.value, error=msg, output_var=var)
        raise RuntimeError(
            f"the metric failed on {ex.source or ex.id}: {type(e).__name__}: {e}"
        ) from e
    loss = None
    if grad:
        loss = MetricLoss(lambda p, e: (score, explanation), name=metric_name)(var, ex.expected)
    return Outcome(
        ex, score, explanation, output=var.value, output_var=var if grad else None, loss=loss
    )


def mean(xs: Iterable[float]) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


_LABELS = {"val": "validation", "train": "minibatch check", "eval": "eval"}

BATCH_SPLITS = (None, "val", "test", "eval")
"""Scoring that goes through a provider batch when one is configured: whole evaluations.
Training minibatches ("train") stay live: a step waits only for the evaluations it needs."""


def batch_options(value: Any, run_dir: Any = None) -> BatchOptions | None:
    """``batch=`` / ``batch_eval=`` as options; the run directory keeps the journal."""
    if not value:
        return None
    opts = value if isinstance(value, BatchOptions) else BatchOptions()
    if opts.run_dir is None and run_dir not in (None, False):
        opts = dataclasses.replace(opts, run_dir=run_dir)
    return opts


class Runner:
    """Runs examples concurrently, each in its own copy of the caller's context."""

    def __init__(
        self,
        program: Callable[..., Any],
        metric: Callable[[Any, Any], Any],
        metric_name: str,
        concurrency: int,
        *,
        batch: bool | BatchOptions | None = None,
        run_dir: Any = None,
    ) -> None:
        """``batch``: whole evaluations go through provider batches, journal in ``run_dir``."""
        self.program = program
        self.metric = metric
        self.metric_name = metric_name
        self.pool = ContextPool(max(1, concurrency), "tg-train")
        self.calls = 0  # examples run and scored (rollouts)
        # told of every finished example (begin/advance/end): the progress display
        self.observer: Any = None
        self.batch = batch_options(batch, run_dir)  # set: scoring goes through provider batches
        self.batch_reports: list[dict[str, Any]] = []

    def run(self, examples: Sequence[Example], grad: bool,
            split: str | None = None) -> list[Outcome]:
        self.calls += len(examples)
        attrs = {"tracegrad.eval.split": split, "tracegrad.metric": self.metric_name}
        obs = self.observer
        if obs is not None:
            obs.begin(_LABELS.get(split, split or "evaluate") if not grad else "forward",
                      len(examples))

        def plain(ex: Example) -> Outcome:
            return run_example(self.program, self.metric, self.metric_name, ex, grad)

        def one(ex: Example) -> Outcome:
            out = plain(ex)
            if obs is not None:
                obs.advance()
            return out

        # training's forward pass (grad) is traced as "forward", any scoring as "evaluate"
        try:
            with telemetry.operation("forward" if grad else "evaluate", attrs) as op:
                if self.batch is not None and not grad and split in BATCH_SPLITS:  # bulk
                    # a round runs every example again until its batch answered, so the
                    # count advances once the results are in (the batch says how it waits)
                    outcomes, report = run_batched(examples, plain, self.pool.map, self.batch)
                    self.batch_reports.append({"split": split, **report})
                    for _ in outcomes if obs is not None else ():
                        obs.advance()
                else:
                    outcomes = self.pool.map(one, examples)
                if op is not None:
                    telemetry.record_outcomes(op, self.metric_name, outcomes)
        finally:
            if obs is not None:
                obs.end()
        return outcomes

    def close(self) -> None:
        self.pool.close()


def evaluate(
    program: Callable[..., Any],
    data: Any,
    metric: Any = "exact_match",
    *,
    concurrency: int = DEFAULT_MAX_CONCURRENCY,
    input_fields: Sequence[str] | None = None,
    output_field: str | None = None,
    progress: Any = False,
    batch: bool | BatchOptions | None = None,
) -> EvalResult:
    """Score a program on a dataset (no graph is recorded, nothing is optimized).

    ``progress=True`` shows count, ETA, calls, tokens and dollars on stderr while it runs
    (:class:`~tracegrad.train.progress.EvalProgress`); an object with ``begin``/``advance``/
    ``end`` is told of every finished example instead. The whole evaluation is one
    ``tracegrad.eval`` span when tracing is on.

    ``batch`` (True or :class:`~tracegrad.llm.batch.BatchOptions`) sends the calls through
    the provider's Batch API: half the price, results within the provider's window
    (typically 24 h); with ``BatchOptions(run_dir=...)`` a killed evaluation resumes the
    same batches. The result's ``batch`` says what was submitted, failed and retried.
    """
    from .progress import eval_progress
    from .usage import Meters, engines_in

    ds = load_dataset(data, input_fields, output_field)
    fn = get_metric(metric)
    name = getattr(fn, "__name__", "metric")
    runner = Runner(program, fn, name, concurrency, batch=batch)
    if progress:  # the spend so far, read live from the meters behind the program's engines
        meters = Meters([*engines_in(program), *engines_in(fn),
                         *engines_in(getattr(fn, "wrapped", None))])
        runner.observer = eval_progress(progress, meters.snapshot if meters.meters else None)
    try:
        with telemetry.operation("eval", {"tracegrad.metric": name,
                                          "tracegrad.eval.examples": len(ds)}):
            outcomes = runner.run(list(ds), grad=False, split="eval")
    finally:
        runner.close()
    raise_if_all_crashed(outcomes)
    report = runner.batch_reports[-1] if runner.batch_reports else None
    return EvalResult(mean(o.score for o in outcomes), outcomes, batch=report)


def raise_if_all_crashed(outcomes: list[Outcome]) -> None:
    if outcomes and all(o.crashed for o in outcomes):
        raise RuntimeError(f"the program failed on every example; first error: {outcomes[0].error}")



Note = tuple[str, float, str]  # (example id, score, feedback)


class ScoreCache:
    """Scores of parameter values on examples: each (values, example) pair runs once per run.

    A gate re-scores the parent, a beam proposes the same text twice, a resumed run
    re-validates its pool: none of it pays twice.
    """

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.known: dict[tuple[str, str, str], tuple[float, str]] = {}
        # the outcomes themselves (graph dropped), for the run's per-example table
        self.outcomes: dict[tuple[str, str, str], Outcome] = {}

    def score(self, split: str, examples: Sequence[Example],
              state: dict[str, Any]) -> tuple[float, dict[str, float], list[Note]]:
        """Score the current parameter values (which must equal ``state``) on ``examples``."""
        h = state_hash(state)
        todo = [ex for ex in examples if (h, split, ex.id) not in self.known]
        if todo:
            outcomes = self.runner.run(todo, grad=False, split=split)
            # every example failing the same way is a broken setup (server down, bad key),
            # not a bad prompt: stop instead of optimizing against it
            raise_if_all_crashed(outcomes)
            self.add(h, split, outcomes)
        scores = {ex.id: self.known[(h, split, ex.id)][0] for ex in examples}
        notes = [(ex.id, *self.known[(h, split, ex.id)]) for ex in examples]
        return mean(scores.values()), scores, notes

    def score_against(self, split: str, examples: Sequence[Example], state: dict[str, Any],
                      parent: Mapping[str, float], floor: float, strict: bool,
                      chunk: int) -> tuple[float, dict[str, float], list[Note], bool]:
        """:meth:`score`, in chunks of ``chunk`` examples, stopping once the mean can no
        longer reach ``floor`` (exceed it, when ``strict``) even if every example left
        scored 1.0.

        The examples ``parent`` (its score per example id) fails come first: they are the
        only ones a proposal can gain on, so a proposal the gate would drop is usually
        clear well before the last example. The verdict is the one full scoring would
        give; only the cost differs. Returns ``(mean, scores, notes, stopped)``; when
        stopped, ``mean`` is the bound (what the unscored examples could at most have
        brought) and ``scores``/``notes`` cover the scored examples only.
        """
        order = sorted(examples, key=lambda ex: parent.get(ex.id, 0.0))
        n, step, got = len(order), max(1, chunk), 0.0
        for i in range(step, n, step):  # the last chunk cannot stop anything early
            got += sum(self.score(split, order[i - step:i], state)[1].values())
            best = got + (n - i)
            if best <= floor * n + 1e-9 if strict else best < floor * n - 1e-9:
                _, scores, notes = self.score(split, order[:i], state)
                return best / n, scores, notes, True
        return (*self.score(split, examples, state), False)

    def add(self, h: str, split: str, outcomes: Iterable[Outcome]) -> None:
        for o in outcomes:
            self.known.setdefault((h, split, o.example.id), (o.score, o.feedback()))
            self.outcomes.setdefault((h, split, o.example.id),
                                     dataclasses.replace(o, output_var=None, loss=None))


def fail_summary(notes: Iterable[Note], limit: int) -> str:
    """The distinct feedback of the examples that were not fully correct."""
    lines: list[str] = []
    for _, score, text in notes:
        if score < 1.0 and text not in lines:
            lines.append(text)
    return shorten("\n".join(lines), limit)


def score_note(split: str, notes: list[Note], limit: int) -> str:
    """What the optimizer may learn about a score.

    Validation examples are held out: the optimizer is told how many failed, never
    which or why, or it would fit the validation set it is being judged on.
    """
    if split == "val":
        wrong = sum(1 for _, score, _ in notes if score < 1.0)
        return f"{wrong} of {len(notes)} validation examples were not fully correct"
    return fail_summary(notes, limit)


def positive_losses(outcomes: list[Outcome], n: int, rng: random.Random) -> list[Variable]:
    """A few correct examples as losses that say "keep this", so backward knows what to keep
    as well as what to fix."""
    good = [o for o in outcomes if o.score >= 1.0 and o.output_var is not None]
    if not good or n <= 0:
        return []
    return [
        MetricLoss(lambda p, e, t=positive_feedback(o.example.inputs, o.output): (1.0, t),
                   name="positive example")(o.output_var, o.example.expected)
        for o in rng.sample(good, min(n, len(good)))
    ]
