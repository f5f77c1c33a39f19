"""``optimize()``: the training loop, with the safety rails a paid run needs.

One step, as in minibatch SGD: sample a batch, run the pipeline on it concurrently, score
each output with the metric, aggregate the failures into one loss, run backward once,
let the optimizer propose new values. Unlike SGD, a textual step can easily make things
worse, so every proposal is *gated*: it is evaluated (on the validation set, or on the
batch when there is none) and reverted if it does not hold up. The best candidates are
kept in a small pool; the parameters end at the best one.

A run is written to a run directory after every step (see :mod:`.runs`), so it can be
stopped by a budget, Ctrl-C or ``kill -9`` and resumed from its last finished step with
the same history. Sampling is derived from ``(seed, step)`` alone, so a resumed run draws
the same batches it would have drawn uninterrupted.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import inspect
import math
import random
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.context import backward_llm, enable_grad, get_backward_llm, no_grad
from ..core.graph import graph as build_graph
from ..core.module import Module
from ..core.shorten import shorten
from ..core.variable import Parameter, Variable
from ..llm.base import ConfigurationError, LLMError, RetryableError, find_engine
from ..ops.loss import MetricLoss, aggregate
from ..ops.python import ExecutionError
from ..sandbox import SandboxUnavailable
from .data import Example, load_dataset
from .metrics import get_metric
from .runs import BEST, CONFIG, STATE, RunDir, collect_secrets, default_run_dir, state_hash

__all__ = ["EvalResult", "OptimizeResult", "Outcome", "Trainer", "evaluate", "optimize"]

GATES = ("non-decrease", "improve", "minibatch", "none")
OPTIMIZER_NAMES = {
    "tgd": "TGD",
    "textgrad": "TGD",
    "textual": "TGD",
    "trace": "TraceOptimizer",
    "optoprime": "TraceOptimizer",
    "opro": "OPRO",
    "tgd-batched": "TGD",
}
# names that choose options of their optimizer, as well as its class
OPTIMIZER_OPTIONS: dict[str, dict[str, Any]] = {"tgd-batched": {"batch_feedback": True}}
_ITEM_LIMIT = 600  # one example's feedback, in history and in the optimizer's summary


# -- results ---------------------------------------------------------------------------


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

    def feedback(self, limit: int = _ITEM_LIMIT) -> str:
        inputs = shorten(self.example.inputs, 200)
        return shorten(f"[{self.example.id}] input {inputs}: {self.explanation}", limit)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.example.id,
            "score": self.score,
            "explanation": self.explanation,
            "output": shorten(self.output, 2000) if self.output is not None else None,
            "error": self.error,
        }


@dataclass
class EvalResult:
    score: float
    outcomes: list[Outcome]

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
        d = asdict(self)
        d["run_dir"] = str(self.run_dir) if self.run_dir else None
        return d

    def summary(self) -> str:
        def f(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.3f}"

        usd = (self.usage.get("total") or {}).get("usd")
        cost = f", ${usd:.4f}" if isinstance(usd, int | float) else ""
        return (
            f"{self.steps_done} steps ({self.stopped_reason}): score {f(self.baseline_score)}"
            f" -> best {f(self.best_score)}{cost}"
            + (f"; run in {self.run_dir}" if self.run_dir else "")
        )


class _BudgetStop(Exception):
    """The run's own budget check tripped between steps (several meters, one budget)."""


def _is_budget_error(e: BaseException) -> bool:
    try:
        from ..llm.meter import BudgetExceeded
    except ImportError:  # pragma: no cover - the meter module is part of the package
        BudgetExceeded = None  # type: ignore[assignment]  # noqa: N806
    if BudgetExceeded is not None and isinstance(e, BudgetExceeded):
        return True
    return any(c.__name__ == "BudgetExceeded" for c in type(e).__mro__) or isinstance(
        e, _BudgetStop
    )


# -- evaluation ---------------------------------------------------------------------------


def _call_program(program: Callable[..., Any], ex: Example) -> Any:
    return program(**ex.inputs)


def _run_example(
    program: Callable[..., Any],
    metric: Callable[[Any, Any], tuple[float, str]],
    metric_name: str,
    ex: Example,
    grad: bool,
) -> Outcome:
    """Run and score one example; pipeline failures become feedback, not exceptions."""
    with enable_grad() if grad else no_grad():
        try:
            out = _call_program(program, ex)
        except ExecutionError as e:
            return Outcome(ex, 0.0, str(e), error=str(e), loss=e.variable if grad else None)
        except Exception as e:  # noqa: BLE001 - one broken example must not end the run
            if _is_budget_error(e) or isinstance(
                e, ConfigurationError | RetryableError | SandboxUnavailable
            ):
                # SandboxUnavailable: the machine cannot run rewritten code; every example
                # would fail the same way. RetryableError: the server kept failing after
                # every retry (outage, rate limit, timeouts). Neither says anything about
                # this example; scored as 0 it would sway this step's accept/revert
                # decision, which is then saved. Stop instead: the unfinished step is not
                # recorded and a resume redoes it.
                raise
            msg = f"The pipeline raised {type(e).__name__}: {shorten(str(e), 500)}"
            return Outcome(ex, 0.0, msg, error=msg, crashed=True)
        var = out if isinstance(out, Variable) else Variable(out, role="output of the program")
        try:
            score, explanation = metric(var.value, ex.expected)
        except Exception as e:
            if _is_budget_error(e) or isinstance(e, ConfigurationError | RetryableError):
                raise  # a judge the server could not reach: as above
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


def _mean(xs: Iterable[float]) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


class _Runner:
    """Runs examples concurrently, each in its own copy of the caller's context."""

    def __init__(
        self,
        program: Callable[..., Any],
        metric: Callable[[Any, Any], Any],
        metric_name: str,
        concurrency: int,
    ) -> None:
        self.program = program
        self.metric = metric
        self.metric_name = metric_name
        self.pool = ThreadPoolExecutor(
            max_workers=max(1, concurrency), thread_name_prefix="tg-train"
        )

    def run(self, examples: Sequence[Example], grad: bool) -> list[Outcome]:
        futures: list[Future[Outcome]] = []
        for ex in examples:
            ctx = contextvars.copy_context()
            futures.append(
                self.pool.submit(
                    ctx.run, _run_example, self.program, self.metric, self.metric_name, ex, grad
                )
            )
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def evaluate(
    program: Callable[..., Any],
    data: Any,
    metric: Any = "exact_match",
    *,
    concurrency: int = 8,
    input_fields: Sequence[str] | None = None,
    output_field: str | None = None,
) -> EvalResult:
    """Score a program on a dataset (no graph is recorded, nothing is optimized)."""
    ds = load_dataset(data, input_fields, output_field)
    fn = get_metric(metric)
    runner = _Runner(program, fn, getattr(fn, "__name__", "metric"), concurrency)
    try:
        outcomes = runner.run(list(ds), grad=False)
    finally:
        runner.close()
    _raise_if_all_crashed(outcomes)
    return EvalResult(_mean(o.score for o in outcomes), outcomes)


def _raise_if_all_crashed(outcomes: list[Outcome]) -> None:
    if outcomes and all(o.crashed for o in outcomes):
        raise RuntimeError(f"the program failed on every example; first error: {outcomes[0].error}")


# -- usage and budget ---------------------------------------------------------------------

_TALLY_KEYS = (
    "calls",
    "cached_calls",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "usd",
)


def _add(a: dict[str, Any], b: dict[str, Any], sign: int = 1) -> dict[str, Any]:
    out = dict(a)
    for k in _TALLY_KEYS:
        v = b.get(k)
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[k] = round(out.get(k, 0) + sign * v, 10)
    return out


def _zero() -> dict[str, Any]:
    return {k: 0 for k in _TALLY_KEYS} | {"usd": 0.0}


class _Meters:
    """The distinct usage ledgers behind the run's engines, read as one."""

    def __init__(self, engines: Iterable[Any]) -> None:
        try:
            from ..llm.meter import Meter
        except ImportError:  # pragma: no cover
            Meter = None  # type: ignore[assignment]  # noqa: N806
        self.meters: list[Any] = []
        self.unmetered: list[Any] = []
        seen: set[int] = set()
        for e in engines:
            m = find_engine(e, Meter) if Meter is not None else None
            if m is None:
                if all(e is not u for u in self.unmetered):
                    self.unmetered.append(e)
                continue
            key = id(getattr(m, "_ledger", m))
            if key not in seen:
                seen.add(key)
                self.meters.append(m)
        self._saved_budgets: list[Any] = []

    def snapshot(self) -> dict[str, Any]:
        total = _zero()
        by_purpose: dict[str, dict[str, Any]] = {}
        for m in self.meters:
            snap = m.snapshot()
            total = _add(total, snap.get("total", {}))
            for p, t in (snap.get("by_purpose") or {}).items():
                by_purpose[p] = _add(by_purpose.get(p, _zero()), t)
        return {"total": total, "by_purpose": by_purpose, "metered": bool(self.meters)}

    @staticmethod
    def delta(now: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
        out = {"total": _add(now["total"], before.get("total", {}), -1), "by_purpose": {}}
        for p, t in now.get("by_purpose", {}).items():
            d = _add(t, before.get("by_purpose", {}).get(p, {}), -1)
            if any(d.get(k) for k in _TALLY_KEYS):
                out["by_purpose"][p] = d
        return out

    def attach(self, budget: Any, spent_before: dict[str, Any]) -> list[str]:
        """Give every ledger the run's remaining budget; returns warnings to record."""
        from ..llm.meter import Budget

        notes: list[str] = []
        if not self.meters:
            raise ValueError(
                "budget= needs metered engines: build them with tg.LLM(...) or wrap them with "
                "tracegrad.llm.Meter(engine); no engine of this run is metered"
            )
        if self.unmetered:
            names = ", ".join(
                sorted({getattr(e, "model", type(e).__name__) for e in self.unmetered})
            )
            notes.append(f"budget does not cover unmetered engines: {names}")
        if len(self.meters) > 1:
            notes.append(
                f"{len(self.meters)} separate meters: each enforces the budget alone; "
                "the run also checks the sum between steps"
            )
        for m in self.meters:
            self._saved_budgets.append((m, m.budget))
            used = m.snapshot().get("total", {})

            def lim(limit: float | None, used_now: float, before: float) -> float | None:
                return None if limit is None else used_now + max(0.0, limit - before)

            m.budget = Budget(
                usd=lim(budget.usd, used.get("usd", 0.0), spent_before.get("usd", 0.0)),
                tokens=None
                if budget.tokens is None
                else int(
                    lim(
                        budget.tokens,
                        used.get("total_tokens", 0),
                        spent_before.get("total_tokens", 0),
                    )
                    or 0
                ),
                calls=None
                if budget.calls is None
                else int(
                    lim(budget.calls, used.get("calls", 0), spent_before.get("calls", 0)) or 0
                ),
            )
        return notes

    def detach(self) -> None:
        for m, b in self._saved_budgets:
            m.budget = b
        self._saved_budgets = []


def _as_budget(budget: Any) -> Any:
    if budget is None:
        return None
    from ..llm.meter import Budget

    if isinstance(budget, Budget):
        return budget
    if isinstance(budget, Mapping):
        return Budget(**budget)
    if isinstance(budget, int | float):
        return Budget(usd=float(budget))
    raise TypeError(f"budget must be a tg.Budget, a dict or a dollar amount, got {budget!r}")


def _engines_in(obj: Any, depth: int = 0, seen: set[int] | None = None) -> Iterator[Any]:
    """Engines a program holds (``LLMCall.llm`` and the like), found by walking attributes."""
    seen = seen if seen is not None else set()
    if obj is None or id(obj) in seen or depth > 5:
        return
    seen.add(id(obj))
    if callable(getattr(obj, "complete", None)) and hasattr(obj, "model") and depth > 0:
        yield obj
        return
    if isinstance(obj, Mapping):
        children: Iterable[Any] = obj.values()
    elif isinstance(obj, list | tuple):
        children = obj
    elif isinstance(obj, str | bytes | int | float | bool | Variable):
        return
    elif inspect.isfunction(obj):  # a closure may hold the engine (llm_judge, plain functions)
        children = []
        for cell in obj.__closure__ or ():
            with contextlib.suppress(ValueError):  # an empty cell
                children.append(cell.cell_contents)
    elif hasattr(obj, "__dict__") and not inspect.isclass(obj) and not inspect.ismodule(obj):
        children = [v for k, v in vars(obj).items() if not k.startswith("__")]
    else:
        return
    for child in children:
        yield from _engines_in(child, depth + 1, seen)


def describe_engine(engine: Any) -> dict[str, Any] | None:
    """What a run records about an engine: the model and the wrapper chain, never keys."""
    if engine is None:
        return None
    chain, e, inner = [], engine, engine
    while e is not None and len(chain) < 20:
        chain.append(type(e).__name__)
        inner = e
        e = getattr(e, "inner", None)
    out: dict[str, Any] = {"model": getattr(engine, "model", None), "chain": chain}
    url = getattr(inner, "display_url", None) or getattr(inner, "base_url", None)
    if isinstance(url, str):
        out["base_url"] = url
    params = getattr(inner, "params", None)
    if isinstance(params, dict):
        out["params"] = {
            k: v for k, v in params.items() if isinstance(v, str | int | float | bool | type(None))
        }
    return out


# -- progress -----------------------------------------------------------------------------


class _Progress:
    """A live status table on stderr when it is a terminal, one line per step otherwise."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self.total = total
        self.t0 = time.perf_counter()
        self.status: dict[str, Any] = {"step": 0, "phase": "starting"}
        self.rows: list[tuple[str, ...]] = []
        self.console: Any = None
        self.live: Any = None
        if not enabled:
            return
        try:
            from rich.console import Console
            from rich.live import Live
        except ImportError:  # pragma: no cover - rich comes with typer
            self.console = None
            return
        self.console = Console(stderr=True, highlight=False)
        if self.console.is_terminal:
            self.live = Live(
                self._table(), console=self.console, refresh_per_second=4, transient=False
            )
            self.live.start()

    @staticmethod
    def _num(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    def _usage_cells(self) -> tuple[str, str, str]:
        u = self.status.get("usage") or {}
        t = u.get("total") or {}
        if not u.get("metered"):
            return "-", "-", "-"
        tok = t.get("total_tokens", 0)
        tok_s = f"{tok / 1000:.1f}k" if tok >= 1000 else str(tok)
        return str(t.get("calls", 0)), tok_s, f"${t.get('usd', 0.0):.4f}"

    def _table(self, status: bool = True) -> Any:
        from rich.table import Table

        table = Table(title="tracegrad optimize", title_justify="left", expand=False)
        for col in ("step", "train", "val", "best", "result", "calls", "tokens", "$", "elapsed"):
            table.add_column(col, justify="right" if col not in ("result",) else "left")
        for row in self.rows[-8:]:
            table.add_row(*row)
        if not status:
            return table
        calls, tok, usd = self._usage_cells()
        s = self.status
        table.add_row(
            f"{s.get('step', 0)}/{self.total}",
            self._num(s.get("train")),
            self._num(s.get("val")),
            self._num(s.get("best")),
            f"[dim]{s.get('phase', '')}[/dim]",
            calls,
            tok,
            usd,
            f"{time.perf_counter() - self.t0:.1f}s",
        )
        return table

    def update(self, **kw: Any) -> None:
        if not self.enabled:
            return
        self.status.update(kw)
        if self.live is not None:
            self.live.update(self._table())

    def step_done(self, rec: dict[str, Any]) -> None:
        if not self.enabled or self.console is None:
            return
        self.status["usage"] = rec.get("usage_total")
        calls, tok, usd = self._usage_cells()
        result = rec.get("result", "")
        row = (
            f"{rec['step']}/{self.total}",
            self._num(rec.get("train_score")),
            self._num(rec.get("val_score")),
            self._num(rec.get("best_score")),
            result,
            calls,
            tok,
            usd,
            f"{time.perf_counter() - self.t0:.1f}s",
        )
        self.rows.append(row)
        if self.live is not None:
            self.live.update(self._table())
        else:
            self.console.print(
                f"step {row[0]}  train {row[1]}  val {row[2]}  best {row[3]}  {result}  "
                f"calls {calls}  tokens {tok}  {usd}  {row[8]}",
                markup=False,
                soft_wrap=True,
            )

    def message(self, text: str) -> None:
        if self.enabled and self.console is not None:
            console = self.live.console if self.live is not None else self.console
            console.print(text, markup=False, soft_wrap=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.update(self._table(status=False))
            self.live.stop()
            self.live = None


# -- the trainer --------------------------------------------------------------------------


class Trainer:
    """Configure an optimization run; :meth:`fit` runs it. ``optimize()`` is the shortcut.

    See :func:`optimize` for the arguments.
    """

    def __init__(
        self,
        program: Callable[..., Any],
        train: Any,
        val: Any = None,
        *,
        metric: Any,
        optimizer: Any = "tgd",
        parameters: Iterable[Parameter] | Mapping[str, Parameter] | None = None,
        steps: int = 10,
        epochs: int | None = None,
        batch_size: int = 8,
        budget: Any = None,
        engine: Any = None,
        optimizer_engine: Any = None,
        run_dir: str | Path | None | bool = None,
        resume: str | Path | None = None,
        seed: int = 0,
        concurrency: int = 8,
        gate: str = "non-decrease",
        patience: int | None = None,
        pool_size: int = 3,
        pareto: bool = False,
        beam: int = 1,
        positive_examples: int = 2,
        progress: bool = True,
        on_step: Callable[[dict[str, Any]], Any] | None = None,
        config: Mapping[str, Any] | None = None,
        input_fields: Sequence[str] | None = None,
        output_field: str | None = None,
        feedback_limit: int = 4000,
    ) -> None:
        if gate not in GATES:
            raise ValueError(f"gate must be one of {', '.join(GATES)}, got {gate!r}")
        for name, v, lo in (
            ("batch_size", batch_size, 1),
            ("beam", beam, 1),
            ("pool_size", pool_size, 1),
            ("concurrency", concurrency, 1),
            ("steps", steps, 0),
        ):
            if not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        # Data first: a broken file must stop the run before any engine is touched.
        self.train = load_dataset(train, input_fields, output_field)
        self.val = load_dataset(val, input_fields, output_field) if val is not None else None
        self.metric = get_metric(metric)
        self.metric_name = getattr(metric, "__name__", None) or str(metric)
        self.program = program
        self.batch_size = batch_size
        self.epochs = epochs
        per_epoch = math.ceil(len(self.train) / batch_size)
        self.steps = epochs * per_epoch if epochs is not None else steps
        self.budget = _as_budget(budget)
        self.engine = engine
        self.seed = seed
        self.concurrency = concurrency
        self.gate = gate
        self.patience = patience
        self.pool_size = pool_size
        self.pareto = pareto
        self.beam = beam
        self.positive_examples = positive_examples
        self.progress_enabled = progress
        self.on_step = on_step
        self.user_config = dict(config or {})
        self.feedback_limit = feedback_limit
        self.named = self._named_parameters(program, parameters, optimizer)
        for name, p in self.named.items():
            # Auto-generated names ("param17") differ from process to process, and the
            # optimizer keys its memory by name: a resumed run would lose that memory.
            # The module path is stable, and reads better in the optimizer's prompts.
            if p.name == f"{p.kind}{p.id}":
                p.name = name
        self.optimizer_engine = optimizer_engine or get_backward_llm(required=False) or engine
        self.optimizer = self._build_optimizer(optimizer)
        self.optimizer_name = optimizer if isinstance(optimizer, str) else type(optimizer).__name__
        self.resume = Path(resume) if resume is not None else None
        if self.resume is not None:
            self.run_path: Path | None = self.resume
        elif run_dir is False:
            self.run_path = None
        else:
            self.run_path = Path(run_dir) if run_dir else default_run_dir()
        self._cache: dict[tuple[str, str, str], tuple[float, str]] = {}

    # -- setup ---------------------------------------------------------------------
    @staticmethod
    def _named_parameters(program: Any, parameters: Any, optimizer: Any) -> dict[str, Parameter]:
        if parameters is not None:
            items = (
                list(parameters.items())
                if isinstance(parameters, Mapping)
                else [(p.name, p) for p in parameters]
            )
        elif isinstance(program, Module) or hasattr(program, "named_parameters"):
            items = list(program.named_parameters())
        elif hasattr(program, "parameters"):
            items = [(p.name, p) for p in program.parameters()]
        elif not isinstance(optimizer, str) and hasattr(optimizer, "params"):
            items = [(p.name, p) for p in optimizer.params]
        else:
            raise TypeError(
                "cannot find the program's parameters: use a tg.Module, or pass parameters=[...]"
            )
        named: dict[str, Parameter] = {}
        for name, p in items:
            if not isinstance(p, Parameter):
                raise TypeError(f"parameter {name!r} is not a tg.Parameter: {p!r}")
            key, i = name, 2
            while key in named and named[key] is not p:
                key, i = f"{name}#{i}", i + 1
            named[key] = p
        if not any(p.requires_grad for p in named.values()):
            raise ValueError("the program has no trainable parameter to optimize")
        return named

    def _build_optimizer(self, optimizer: Any) -> Any:
        trainable = [p for p in self.named.values() if p.requires_grad]
        if not isinstance(optimizer, str | type):
            return optimizer
        options: dict[str, Any] = {}
        if isinstance(optimizer, type):
            cls = optimizer
        else:
            key = optimizer.strip().lower()
            if key not in OPTIMIZER_NAMES:
                raise ValueError(
                    f"unknown optimizer {optimizer!r}; use one of "
                    f"{', '.join(sorted(OPTIMIZER_NAMES))} or an Optimizer instance"
                )
            try:
                from .. import optim

                cls = getattr(optim, OPTIMIZER_NAMES[key])
            except (ImportError, AttributeError) as e:
                raise ImportError(
                    f"optimizer {optimizer!r} is not available "
                    f"(tracegrad.optim.{OPTIMIZER_NAMES[key]}): {e}"
                ) from e
            options = OPTIMIZER_OPTIONS.get(key, {})
        return cls(trainable, engine=self.optimizer_engine, max_concurrency=self.concurrency,
                   **options)

    def state(self) -> dict[str, Any]:
        return {name: p.value for name, p in self.named.items()}

    def load(self, state: Mapping[str, Any]) -> None:
        for name, value in state.items():
            if name in self.named:
                self.named[name].value = value

    def _engines(self) -> list[Any]:
        found: list[Any] = []
        try:  # an optimizer's engine property may raise when no backward engine is set
            opt_engine = getattr(self.optimizer, "engine", None)
        except Exception:  # noqa: BLE001
            opt_engine = None
        for e in [
            self.engine,
            self.optimizer_engine,
            opt_engine,
            get_backward_llm(required=False),
            *_engines_in(self.program),
            *_engines_in(getattr(self.metric, "wrapped", None)),
        ]:
            if e is not None and all(e is not f for f in found):
                found.append(e)
        return found

    def _config(self) -> dict[str, Any]:
        from .. import __version__

        program_engines = [describe_engine(e) for e in _engines_in(self.program)]
        return {
            "tracegrad_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "program": getattr(self.program, "__qualname__", None)
            or type(self.program).__qualname__,
            "optimizer": {
                "name": self.optimizer_name,
                "class": type(self.optimizer).__name__,
                "needs_backward": bool(getattr(self.optimizer, "needs_backward", True)),
                "engine": describe_engine(self.optimizer_engine),
            },
            "metric": self.metric_name,
            "steps": self.steps,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "gate": self.gate,
            "patience": self.patience,
            "pool_size": self.pool_size,
            "pareto": self.pareto,
            "beam": self.beam,
            "positive_examples": self.positive_examples,
            "concurrency": self.concurrency,
            "budget": self.budget.to_dict() if self.budget is not None else None,
            "engines": {"program": program_engines, "engine": describe_engine(self.engine)},
            "datasets": {
                "train": self.train.describe(),
                "val": self.val.describe() if self.val is not None else None,
            },
            "parameters": {
                name: {
                    "initial": p.value,
                    "role": p.role,
                    "kind": p.value_kind,
                    "trainable": p.requires_grad,
                    "constraints": list(p.constraints),
                }
                for name, p in self.named.items()
            },
            "user": self.user_config,
        }

    # -- sampling ------------------------------------------------------------------
    def _batch(self, step: int) -> list[Example]:
        """Step ``step``'s minibatch: epoch-wise shuffles seeded by (seed, epoch)."""
        n = len(self.train)
        per_epoch = math.ceil(n / self.batch_size)
        epoch, i = divmod(step - 1, per_epoch)
        order = list(range(n))
        random.Random(f"{self.seed}:epoch:{epoch}").shuffle(order)
        idx = order[i * self.batch_size : (i + 1) * self.batch_size]
        if len(idx) < min(self.batch_size, n):  # top up a short last batch from the next shuffle
            extra = [j for j in range(n) if j not in idx]
            random.Random(f"{self.seed}:fill:{epoch}").shuffle(extra)
            idx += extra[: self.batch_size - len(idx)]
        return [self.train[j] for j in idx]

    # -- evaluation with a cache ------------------------------------------------------
    def _evaluate(
        self, split: str, examples: Sequence[Example], state: dict[str, Any]
    ) -> tuple[float, dict[str, float], list[Outcome | tuple[str, float, str]]]:
        """Score the current parameter values (which must equal ``state``) on examples.

        Each (values, example) pair is run at most once per run.
        """
        h = state_hash(state)
        todo = [ex for ex in examples if (h, split, ex.id) not in self._cache]
        if todo:
            outcomes = list(self.runner.run(todo, grad=False))
            # every example failing the same way is a broken setup (server down, bad key),
            # not a bad prompt: stop instead of optimizing against it
            _raise_if_all_crashed(outcomes)
            for o in outcomes:
                self._cache[(h, split, o.example.id)] = (o.score, o.feedback())
        scores = {ex.id: self._cache[(h, split, ex.id)][0] for ex in examples}
        notes = [(ex.id, *self._cache[(h, split, ex.id)]) for ex in examples]
        return _mean(scores.values()), scores, notes  # type: ignore[return-value]

    def _score_note(self, split: str, notes: list[Any]) -> str:
        """What the optimizer may learn about a score.

        Validation examples are held out: the optimizer is told how many failed, never
        which or why, or it would fit the validation set it is being judged on.
        """
        if split == "val":
            wrong = sum(1 for _, score, _ in notes if score < 1.0)
            return f"{wrong} of {len(notes)} validation examples were not fully correct"
        return self._fail_summary(notes, self.feedback_limit // 2)

    def _fail_summary(self, notes: Iterable[Any], limit: int | None = None) -> str:
        lines = []
        for _, score, text in notes:
            if score < 1.0 and text not in lines:
                lines.append(text)
        return shorten("\n".join(lines), limit or self.feedback_limit)

    # -- pool ---------------------------------------------------------------------
    def _entry(
        self,
        cid: str,
        step: int,
        parent: str | None,
        state: dict[str, Any],
        score: float | None,
        scores: dict[str, float],
    ) -> dict[str, Any]:
        return {
            "id": cid,
            "step": step,
            "parent": parent,
            "state": dict(state),
            "hash": state_hash(state),
            "score": score,
            "scores": dict(scores),
        }

    def _best(self) -> dict[str, Any]:
        scored = [e for e in self.pool if e["score"] is not None]
        if not scored:
            return self._current()
        return max(scored, key=lambda e: (e["score"], e["step"]))

    def _current(self) -> dict[str, Any]:
        return next(e for e in self.pool if e["id"] == self.current_id)

    def _add_to_pool(self, entry: dict[str, Any]) -> None:
        self.pool.append(entry)
        keep = sorted(
            self.pool,
            key=lambda e: (e["score"] if e["score"] is not None else -1, e["step"]),
            reverse=True,
        )[: self.pool_size]
        must = {entry["id"], self.current_id}
        kept_ids = {e["id"] for e in keep} | must
        self.pool = [e for e in self.pool if e["id"] in kept_ids]

    def _pareto_parent(self, step: int) -> dict[str, Any]:
        """GEPA-style: candidates best on some example, weighted by how many."""
        entries = [e for e in self.pool if e["scores"]]
        if len(entries) < 2:
            return self._current()
        ids = sorted({i for e in entries for i in e["scores"]})
        wins: dict[str, int] = {}
        for i in ids:
            have = [e for e in entries if i in e["scores"]]
            top = max(e["scores"][i] for e in have)
            for e in have:
                if e["scores"][i] == top:
                    wins[e["id"]] = wins.get(e["id"], 0) + 1

        def dominated(a: dict[str, Any]) -> bool:
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

        front = [e for e in entries if wins.get(e["id"]) and not dominated(e)] or [self._current()]
        rng = random.Random(f"{self.seed}:parent:{step}")
        return rng.choices(front, weights=[wins.get(e["id"], 1) for e in front])[0]

    # -- usage ------------------------------------------------------------------------
    def _usage(self) -> dict[str, Any]:
        """Usage of this run so far, including what was spent before a resume."""
        now = self.meters.snapshot()
        d = _Meters.delta(now, self._usage_start)
        prior = self._prior_usage
        d["total"] = _add(d["total"], prior.get("total", {}))
        for p, t in prior.get("by_purpose", {}).items():
            d["by_purpose"][p] = _add(d["by_purpose"].get(p, _zero()), t)
        d["metered"] = now["metered"]
        return d

    def _check_budget(self) -> None:
        if self.budget is None or len(self.meters.meters) < 2:
            return
        t = self._usage()["total"]
        b = self.budget
        if (
            (b.usd is not None and t["usd"] >= b.usd)
            or (b.tokens is not None and t["total_tokens"] >= b.tokens)
            or (b.calls is not None and t["calls"] >= b.calls)
        ):
            raise _BudgetStop("the run's total usage reached the budget")

    # -- files ------------------------------------------------------------------------
    def _save_state(self, stopped: str | None) -> None:
        if self.rd is None:
            return
        try:
            opt_state = self.optimizer.state_dict()
        except Exception as e:  # noqa: BLE001 - a broken state_dict must not lose the run
            opt_state = {"error": f"{type(e).__name__}: {e}"}
        self._state_doc = {
            "version": 1,
            "step": self.step_done,
            "steps": self.steps,
            "current": self.current_id,
            "pool": self.pool,
            "baseline": self.baseline,
            "baseline_recorded": self.baseline_recorded,
            "no_improve": self.no_improve,
            "optimizer": opt_state,
            "rng": {"seed": self.seed, "scheme": "random.Random(f'{seed}:{purpose}:{step}')"},
            "usage": self._usage(),
            "elapsed_s": round(self._elapsed(), 3),
            "stopped_reason": stopped,
        }
        self._state_doc = copy.deepcopy(self._state_doc)  # later in-step edits must not leak in
        self.rd.write_json(STATE, self._state_doc)

    def _mark_stopped(self, stopped: str) -> None:
        """Record why the run ended without touching the last step's resumable state.

        A step cut short (budget, error) may have advanced the optimizer's memory; saving
        that would make a resumed run differ from an uninterrupted one.
        """
        if self.rd is None:
            return
        history = self.rd.read_history()
        recorded = history[-1].get("step") if history else 0
        if self._state_doc is None or (
            recorded == self.step_done and self._state_doc.get("step") == self.step_done - 1
        ):
            # Stopped (Ctrl-C) after a finished step's history line was written but before
            # its state was: memory holds exactly that step's values, so save them rather
            # than leave a state one step behind the history (a resume would redo the step).
            self._save_state(stopped)
            return
        doc = dict(self._state_doc)
        doc["stopped_reason"] = stopped
        doc["usage"] = self._usage()  # money spent in the cut step still counts
        doc["elapsed_s"] = round(self._elapsed(), 3)
        self.rd.write_json(STATE, doc)

    def _save_best(self) -> None:
        if self.rd is None:
            return
        best = self._best()
        self.rd.write_json(
            BEST,
            {
                "id": best["id"],
                "step": best["step"],
                "score": best["score"],
                "baseline_score": self.baseline.get("score"),
                "state": best["state"],
                "hash": best["hash"],
                "split": "val" if self.val is not None else "train-minibatch",
            },
        )

    def _elapsed(self) -> float:
        return self._elapsed_before + (time.perf_counter() - self._t0)

    def _write_graph(self, loss: Variable) -> None:
        if self.rd is None or self.rd.file("graph.json").exists():
            return
        with contextlib.suppress(Exception):
            g = build_graph(loss)
            self.rd.write_json(
                "graph.json",
                {
                    "mermaid": g.to_mermaid(),
                    "nodes": [{"id": n, **d} for n, d in g.nodes(data=True)],
                    "edges": [list(e) for e in g.edges()],
                },
            )

    # -- run ----------------------------------------------------------------------------
    def fit(self) -> OptimizeResult:
        self._t0 = time.perf_counter()
        self._elapsed_before = 0.0
        self._prior_usage: dict[str, Any] = {}
        self.meters = _Meters(self._engines())
        self._usage_start = self.meters.snapshot()
        secrets = collect_secrets(*self._engines())
        self.rd = RunDir(self.run_path, secrets) if self.run_path is not None else None
        self.pool: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self.baseline: dict[str, Any] = {}
        self.baseline_recorded = False
        self.no_improve = 0
        self.step_done = 0
        self.current_id = "c0"
        self._state_doc: dict[str, Any] | None = None
        stopped = "steps"
        notes: list[str] = []
        initial = self.state()
        if self.resume is not None:
            self._restore()
        else:
            if self.rd is not None:
                if self.rd.file(STATE).exists() or self.rd.file("history.jsonl").exists():
                    raise FileExistsError(
                        f"{self.rd.path} already holds a run: pass "
                        f"resume={str(self.rd.path)!r} or another run_dir"
                    )
                self.rd.write_json(CONFIG, self._config())
            self.pool = [self._entry("c0", 0, None, initial, None, {})]
        if self.budget is not None:
            notes = self.meters.attach(self.budget, self._prior_usage.get("total", {}))
            for n in notes:
                warnings.warn(n, stacklevel=3)
        self.runner = _Runner(self.program, self.metric, self.metric_name, self.concurrency)
        self.progress = _Progress(self.progress_enabled, self.steps)
        ctx = (
            backward_llm(self.optimizer_engine)
            if self.optimizer_engine is not None
            else contextlib.nullcontext()
        )
        try:
            with ctx:
                if self.val is not None and self.pool[0]["score"] is None and self.step_done == 0:
                    self._baseline()
                stopped = self._loop(notes)
        except KeyboardInterrupt:
            self._finish("interrupted")
            raise
        except BaseException as e:
            if _is_budget_error(e):
                stopped = "budget"
                self.progress.message(f"budget reached: {e}")
            else:
                self._finish(f"error: {type(e).__name__}: {shorten(str(e), 200)}")
                raise
        return self._finish(stopped)

    def _restore(self) -> None:
        assert self.rd is not None
        config = self.rd.read_json(CONFIG)
        if config is None:
            raise FileNotFoundError(f"cannot resume: no {CONFIG} in {self.rd.path}")
        self._check_compatible(config)
        for stale in self.rd.path.glob(".*.tmp"):  # a killed process's half-written file
            stale.unlink(missing_ok=True)
        state = self.rd.read_json(STATE)
        if state is None:  # killed before the first step finished: start over in place
            self.rd.truncate_history(0)
            self.pool = [self._entry("c0", 0, None, self.state(), None, {})]
        else:
            self._state_doc = copy.deepcopy(state)
            self.step_done = int(state["step"])
            self.pool = state["pool"]
            self.current_id = state["current"]
            self.baseline = state.get("baseline") or {}
            self.baseline_recorded = bool(state.get("baseline_recorded"))
            self.no_improve = int(state.get("no_improve", 0))
            self._prior_usage = state.get("usage") or {}
            self._elapsed_before = float(state.get("elapsed_s", 0.0))
            self.optimizer.load_state_dict(state["optimizer"])
            self.load(self._current()["state"])
            for e in self.pool:  # a resumed run never re-pays for a known score
                if self.val is not None and e["scores"]:
                    for i, s in e["scores"].items():
                        self._cache.setdefault((e["hash"], "val", i), (s, ""))
            self.history = self.rd.truncate_history(self.step_done)
        config.setdefault("resumes", []).append(
            {
                "at_step": self.step_done,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "steps": self.steps,
            }
        )
        config["steps"] = self.steps
        self.rd.write_json(CONFIG, config)

    def _check_compatible(self, config: dict[str, Any]) -> None:
        names = set(config.get("parameters", {}))
        if names and names != set(self.named):
            raise ValueError(
                f"cannot resume: the run optimized parameters {sorted(names)}, "
                f"this program has {sorted(self.named)}"
            )
        for split, ds in (("train", self.train), ("val", self.val)):
            rec = (config.get("datasets") or {}).get(split)
            if rec and ds is not None and rec.get("sha256") and rec["sha256"] != ds.sha256:
                raise ValueError(
                    f"cannot resume: the {split} data differs from the run's "
                    f"({rec.get('path') or 'in-memory'}, sha256 {rec['sha256'][:12]})"
                )

    def _baseline(self) -> None:
        assert self.val is not None
        self.progress.update(phase="baseline on val")
        state = self.state()
        score, scores, notes = self._evaluate("val", list(self.val), state)
        c0 = self.pool[0]
        c0["score"], c0["scores"] = score, scores
        self.baseline = {"score": score, "split": "val"}
        self.optimizer.record_score(score, self._score_note("val", notes))
        self.baseline_recorded = True
        self.progress.update(val=score, best=score)
        self._save_state(None)
        self._save_best()

    def _loop(self, notes: list[str]) -> str:
        for step in range(self.step_done + 1, self.steps + 1):
            self._check_budget()
            best = self._best()
            if self.val is not None and best["score"] is not None and best["score"] >= 1.0:
                return "perfect"
            if self.patience is not None and self.no_improve >= self.patience:
                return "patience"
            record = self._step(step)
            if notes and step == 1:
                record["events"].extend({"event": "budget_note", "note": n} for n in notes)
            self.history.append(record)
            self.step_done = step
            if self.rd is not None:
                self.rd.append_history(record)  # history first: resume cuts it to state.step
            self._save_state(None)
            self._save_best()
            self.progress.step_done(record)
            if self.on_step is not None:
                self.on_step(record)
        return "steps"

    def _step(self, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        usage0 = self.meters.snapshot()
        parent = self._pareto_parent(step) if self.pareto else self._current()
        self.load(parent["state"])
        batch = self._batch(step)
        best_before = self._best()["score"]
        rec: dict[str, Any] = {
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
        self.progress.update(step=step, phase="forward")

        outcomes = self.runner.run(batch, grad=True)
        _raise_if_all_crashed(outcomes)
        ph = state_hash(parent["state"])
        for o in outcomes:
            self._cache.setdefault((ph, "train", o.example.id), (o.score, o.feedback()))
        parent_mb = _mean(o.score for o in outcomes)
        rec["train_score"] = parent_mb
        if self.val is None and parent["score"] is None:
            parent["score"] = parent_mb
            parent["scores"] = {o.example.id: o.score for o in outcomes}
            rec["parent_score"] = parent_mb
            if parent["id"] == "c0":
                self.baseline = {"score": parent_mb, "split": "train-minibatch"}
        failures = [o for o in outcomes if o.score < 1.0]
        rec["feedback"] = [o.feedback() for o in failures]
        self.progress.update(train=parent_mb, phase="backward")
        for o in outcomes:
            if o.loss is not None:
                self._write_graph(o.loss)
                break
        if not self.baseline_recorded:
            self.optimizer.record_score(
                parent["score"] if parent["score"] is not None else parent_mb,
                self._fail_summary((0, o.score, o.feedback()) for o in outcomes),
            )
            self.baseline_recorded = True

        if not failures:
            return self._close(
                rec,
                "skipped",
                "every minibatch example is already correct",
                t0,
                usage0,
                best_before,
            )

        self.optimizer.zero_grad()
        if getattr(self.optimizer, "needs_backward", True):
            losses = [o.loss for o in failures if o.loss is not None]
            if not losses:
                rec["events"].append(
                    {
                        "event": "no_traceable_failure",
                        "detail": "every failure was a crash outside the graph",
                    }
                )
            else:
                losses += self._positives(outcomes, step)
                prop = self.optimizer.propagator() or self._default_propagator(rec)
                bres = aggregate(losses).backward(propagator=prop)
                rec["calls"]["backward"] = getattr(bres, "calls", 0)
                rec["events"].extend(getattr(bres, "events", []) or [])

        self.progress.update(phase="step")
        proposals = self._propose(step, parent, rec)
        if not proposals:
            return self._close(
                rec, "unchanged", "the optimizer proposed no change", t0, usage0, best_before
            )

        self.progress.update(phase="validate")
        chosen, verdict = self._gate(step, parent, parent_mb, batch, proposals, rec)
        if chosen is not None:
            res, cand_state, cand = chosen
            rec["proposed"] = {k: v for k, v in cand_state.items() if parent["state"].get(k) != v}
            rec["candidate"] = cand["id"]
        if verdict["accepted"]:
            assert chosen is not None
            self.load(chosen[1])
            self.current_id = chosen[2]["id"]
            self._add_to_pool(chosen[2])
            rec["accepted"] = True
            return self._close(rec, "accepted", verdict["reason"], t0, usage0, best_before)
        self.load(parent["state"])
        rec["reverted"] = True
        return self._close(rec, "reverted", verdict["reason"], t0, usage0, best_before)

    def _default_propagator(self, rec: dict[str, Any]) -> Any:
        """For an optimizer that wants feedback but names no propagator."""
        from ..backward import TextualPropagator, TracePropagator

        if self.optimizer_engine is not None or get_backward_llm(required=False) is not None:
            return TextualPropagator(engine=self.optimizer_engine, max_concurrency=self.concurrency)
        rec["events"].append(
            {
                "event": "trace_backward",
                "detail": "no backward engine: feedback was passed along the "
                "trace without LLM calls",
            }
        )
        return TracePropagator()

    def _positives(self, outcomes: list[Outcome], step: int) -> list[Variable]:
        good = [o for o in outcomes if o.score >= 1.0 and o.output_var is not None]
        if not good or self.positive_examples <= 0:
            return []
        rng = random.Random(f"{self.seed}:positive:{step}")
        picked = rng.sample(good, min(self.positive_examples, len(good)))
        out = []
        for o in picked:
            text = (
                f"This example was answered correctly (input {shorten(o.example.inputs, 300)}; "
                f"output {shorten(o.output, 300)!r}). Keep what makes it work."
            )
            out.append(
                MetricLoss(lambda p, e, t=text: (1.0, t), name="positive example")(
                    o.output_var, o.example.expected
                )
            )
        return out

    def _call_step(self, j: int, step: int) -> Any:
        fn = self.optimizer.step
        if j > 0:
            try:
                accepts = "sample_id" in inspect.signature(fn).parameters
            except (TypeError, ValueError):
                accepts = False
            if accepts:
                return fn(sample_id=f"{self.seed}:{step}:{j}")
        return fn()

    def _propose(
        self, step: int, parent: dict[str, Any], rec: dict[str, Any]
    ) -> list[tuple[Any, dict[str, Any], dict[str, Any]]]:
        proposals: list[tuple[Any, dict[str, Any], dict[str, Any]]] = []
        seen = {parent["hash"]}
        for j in range(self.beam):
            res = self._call_step(j, step)
            rec["calls"]["optimizer"] += int(getattr(res, "calls", 0) or 0)
            rec["events"].extend(list(getattr(res, "events", []) or []))
            if not getattr(res, "updated", None):
                continue
            cand_state = self.state()
            # Back to the parent without calling revert(): an optimizer may treat revert()
            # as "this proposal was rejected", which is only known after the gate.
            self.load(parent["state"])
            h = state_hash(cand_state)
            if h in seen:
                self._revert(res, cand_state, parent["state"])
                rec["events"].append({"event": "duplicate_proposal", "beam": j})
                continue
            seen.add(h)
            cid = f"c{step}" if self.beam == 1 else f"c{step}.{j}"
            proposals.append(
                (res, cand_state, self._entry(cid, step, parent["id"], cand_state, None, {}))
            )
        return proposals

    def _revert(self, res: Any, cand_state: dict[str, Any], parent_state: dict[str, Any]) -> None:
        """Undo a rejected proposal the optimizer's way, from the values it proposed."""
        self.load(cand_state)
        revert = getattr(res, "revert", None)
        if callable(revert):
            revert()
        self.load(parent_state)  # also undoes anything a partial revert missed

    def _gate(
        self,
        step: int,
        parent: dict[str, Any],
        parent_mb: float,
        batch: list[Example],
        proposals: list[tuple[Any, dict[str, Any], dict[str, Any]]],
        rec: dict[str, Any],
    ) -> tuple[tuple[Any, dict[str, Any], dict[str, Any]] | None, dict[str, Any]]:
        evaluated = []
        beam_log = []
        for res, cand_state, cand in proposals:
            self.load(cand_state)
            mb, mb_scores, mb_notes = None, {}, []
            info: dict[str, Any] = {"candidate": cand["id"]}
            if self.gate == "minibatch" or self.val is None:
                mb, mb_scores, mb_notes = self._evaluate("train", batch, cand_state)
                info["minibatch"] = mb
            if self.val is not None and not (
                self.gate == "minibatch" and mb is not None and mb < parent_mb
            ):
                score, scores, notes = self._evaluate("val", list(self.val), cand_state)
                cand["score"], cand["scores"] = score, scores
                info["val"] = score
                split = "val"
            elif self.val is None:
                score, notes, split = mb, mb_notes, "train"
                cand["score"], cand["scores"] = mb, mb_scores
            else:
                score, notes, split = None, mb_notes, "train"
                info["prechecked_out"] = True
            evaluated.append((res, cand_state, cand, mb, score, notes, split))
            beam_log.append(info)
        self.load(parent["state"])
        if len(proposals) > 1:
            rec["beam"] = beam_log
        ranked = [e for e in evaluated if e[4] is not None]
        pick = (
            max(ranked, key=lambda e: e[4])
            if ranked
            else max(evaluated, key=lambda e: e[3] if e[3] is not None else -1)
        )
        res, cand_state, cand, mb, score, notes, _ = pick
        rec["candidate_train_score"] = mb
        rec["val_score"] = score if self.val is not None else None
        base = parent["score"] if parent["score"] is not None else parent_mb
        where = "val" if self.val is not None else "minibatch"
        if score is None:
            verdict = {
                "accepted": False,
                "reason": f"minibatch pre-check: {parent_mb:.3f} -> {mb:.3f}; "
                "full validation skipped",
            }
        elif self.gate == "none":
            verdict = {"accepted": True, "reason": f"{where} {base:.3f} -> {score:.3f} (no gate)"}
        elif self.gate == "improve":
            ok = score > base
            verdict = {
                "accepted": ok,
                "reason": f"{where} {base:.3f} -> {score:.3f}"
                + ("" if ok else " (not an improvement)"),
            }
        else:
            ok = score >= base
            verdict = {
                "accepted": ok,
                "reason": f"{where} {base:.3f} -> {score:.3f}" + ("" if ok else " (dropped)"),
            }
        for r, cs, c, m, s, n, split in evaluated:
            self.load(cs)
            won = c is cand and verdict["accepted"]
            label = "accepted" if won else "reverted"
            sc = s if s is not None else (m if m is not None else 0.0)
            why = verdict["reason"] if c is cand else "another proposal scored higher"
            self.optimizer.record_score(
                sc,
                shorten(f"{label}: {why}\n{self._score_note(split, n)}", self.feedback_limit),
            )
            if not won:
                self._revert(r, cs, parent["state"])
        self.load(parent["state"])
        return (res, cand_state, cand), verdict

    def _close(
        self,
        rec: dict[str, Any],
        result: str,
        reason: str,
        t0: float,
        usage0: dict[str, Any],
        best_before: float | None,
    ) -> dict[str, Any]:
        best = self._best()
        improved = best["score"] is not None and (
            best_before is None or best["score"] > best_before
        )
        self.no_improve = 0 if improved else self.no_improve + 1
        rec["result"], rec["reason"] = result, reason
        rec["values"] = self.state()
        rec["best_score"] = best["score"]
        rec["best"] = best["id"]
        rec["usage"] = _Meters.delta(self.meters.snapshot(), usage0)
        rec["cost_usd"] = rec["usage"]["total"].get("usd", 0.0)
        rec["usage_total"] = self._usage()
        rec["elapsed_s"] = round(time.perf_counter() - t0, 3)
        self.progress.update(
            val=rec.get("val_score"), best=best["score"], phase=result, usage=rec["usage_total"]
        )
        return rec

    def _finish(self, stopped: str) -> OptimizeResult:
        # wait for calls still in flight *before* lifting the run's budget from the meters,
        # or a worker that was mid-example when the budget ran out sends one more call
        with contextlib.suppress(Exception):
            self.runner.close()
        self.meters.detach()
        best = self._best() if self.pool else None
        if best is not None:
            self.load(best["state"])
        with contextlib.suppress(Exception):
            self.progress.close()
        if self.rd is not None and best is not None:
            self._mark_stopped(stopped)
            self._save_best()
        current = next((e for e in self.pool if e["id"] == self.current_id), best)
        return OptimizeResult(
            best_state=dict(best["state"]) if best else self.state(),
            best_score=best["score"] if best else None,
            baseline_score=self.baseline.get("score"),
            final_score=current["score"] if current else None,
            history=list(self.history),
            run_dir=self.rd.path if self.rd is not None else None,
            usage=self._usage(),
            stopped_reason=stopped,
            steps_done=self.step_done,
        )


def optimize(
    program: Callable[..., Any],
    train: Any,
    val: Any = None,
    *,
    metric: Any,
    optimizer: Any = "tgd",
    steps: int = 10,
    epochs: int | None = None,
    batch_size: int = 8,
    budget: Any = None,
    engine: Any = None,
    optimizer_engine: Any = None,
    run_dir: str | Path | None | bool = None,
    resume: str | Path | None = None,
    seed: int = 0,
    concurrency: int = 8,
    gate: str = "non-decrease",
    patience: int | None = None,
    pool_size: int = 3,
    pareto: bool = False,
    beam: int = 1,
    positive_examples: int = 2,
    progress: bool = True,
    on_step: Callable[[dict[str, Any]], Any] | None = None,
    config: Mapping[str, Any] | None = None,
    parameters: Iterable[Parameter] | Mapping[str, Parameter] | None = None,
    input_fields: Sequence[str] | None = None,
    output_field: str | None = None,
) -> OptimizeResult:
    """Optimize ``program``'s parameters on ``train``, gated by ``val``; see the module doc.

    ``program`` is a ``tg.Module`` or any callable ``f(**example.inputs) -> Variable``
    (then pass ``parameters=``). ``train``/``val`` are dataset paths, lists of dicts or
    :class:`Dataset`. ``metric`` is a name (``"exact_match"``) or a callable returning a
    score or ``(score, explanation)``. ``optimizer`` is "tgd", "trace", "opro" or an
    optimizer instance. ``gate``: "non-decrease" keeps a proposal that does not lower the
    validation score, "improve" only one that raises it, "minibatch" pre-checks on the
    batch before paying for full validation, "none" keeps everything. ``budget`` is a
    ``tg.Budget`` (or dollars) enforced by the engines' meters; when it runs out the run
    stops cleanly with ``stopped_reason="budget"``. ``run_dir=False`` writes no files;
    ``resume=RUN_DIR`` continues a stopped or killed run. The parameters end at the best
    candidate found.
    """
    return Trainer(
        program,
        train,
        val,
        metric=metric,
        optimizer=optimizer,
        steps=steps,
        epochs=epochs,
        batch_size=batch_size,
        budget=budget,
        engine=engine,
        optimizer_engine=optimizer_engine,
        run_dir=run_dir,
        resume=resume,
        seed=seed,
        concurrency=concurrency,
        gate=gate,
        patience=patience,
        pool_size=pool_size,
        pareto=pareto,
        beam=beam,
        positive_examples=positive_examples,
        progress=progress,
        on_step=on_step,
        config=config,
        parameters=parameters,
        input_fields=input_fields,
        output_field=output_field,
    ).fit()
