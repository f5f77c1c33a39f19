"""Tracing hooks: how tracegrad's operations tell an optional tracer what they are doing.

Every layer calls these hooks -- the LLM wrapper (``llm/telemetry.py``), backward, each
optimizer's ``step`` and every evaluation -- so they live in core and know nothing of
OpenTelemetry. :mod:`tracegrad.tracing` installs a backend that does. With no backend (the
default) a hook is one global read returning a shared null context: nothing is imported,
recorded or allocated, so tracing costs nothing unless it is turned on.

An operation span also totals the LLM calls made inside it (tokens, dollars, models),
even calls made from worker threads: tracegrad's pools copy the caller's context, so the
calls see the operations that were open when they were submitted.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

from .shorten import shorten
from .variable import Parameter, Variable, topo_order

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "Backend", "Operation", "add_secrets", "add_usage", "backend", "install", "llm_span",
    "operation", "record_feedback", "record_outcomes", "record_step", "secrets",
    "traced_step", "uninstall",
]

MAX_EVENTS = 100  # per span: a 1,000-row evaluation must not make a 1,000-event span
TEXT_LIMIT = 4000  # one feedback text or parameter value in an event


class SpanHandle(Protocol):
    def set(self, attributes: Mapping[str, Any]) -> None: ...

    def event(self, name: str, attributes: Mapping[str, Any]) -> None: ...


class Backend(Protocol):
    """What :mod:`tracegrad.tracing` provides. ``span`` records an exception raised in its
    block on the span (status, ``error.type``) and re-raises it."""

    capture_content: bool

    def span(self, name: str, kind: str,
             attributes: Mapping[str, Any]) -> contextlib.AbstractContextManager[SpanHandle]: ...


_backend: list[Backend | None] = [None]
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_NULL = contextlib.nullcontext(None)
_open: contextvars.ContextVar[tuple[Operation, ...]] = contextvars.ContextVar(
    "tg_telemetry_ops", default=())
_in_step: contextvars.ContextVar[bool] = contextvars.ContextVar("tg_telemetry_step", default=False)
# live engines built while tracing was off: enable_tracing warns that they stay untraced
untraced_engines: weakref.WeakSet[Any] = weakref.WeakSet()


def backend() -> Backend | None:
    return _backend[0]


def install(b: Backend | None) -> None:
    _backend[0] = b


def uninstall() -> None:
    _backend[0] = None


def add_secrets(values: Iterable[str | None]) -> None:
    """Strings the backend must scrub from every attribute (an engine's API key)."""
    with _secrets_lock:
        _secrets.update(v for v in values if v and len(v) >= 4)


def secrets() -> list[str]:
    with _secrets_lock:
        return list(_secrets)


class Operation:
    """One traced tracegrad operation: its span, and the usage of the LLM calls inside it."""

    def __init__(self, span: SpanHandle) -> None:
        self.span = span
        self._lock = threading.Lock()
        self.calls = self.cached = self.input_tokens = self.output_tokens = 0
        self.cost = 0.0
        self.models: set[str] = set()
        self.events = 0

    def add(self, model: str, input_tokens: int, output_tokens: int, cost: float,
            cached: bool) -> None:
        with self._lock:
            self.calls += 1
            self.models.add(model)
            if cached:
                self.cached += 1
                return
            self.input_tokens += input_tokens
            self.output_tokens += output_tokens
            self.cost += cost

    def event(self, name: str, attributes: Mapping[str, Any]) -> None:
        with self._lock:
            self.events += 1
            if self.events > MAX_EVENTS:
                return
        self.span.event(name, attributes)

    def totals(self) -> dict[str, Any]:
        with self._lock:
            attrs: dict[str, Any] = {
                "tracegrad.llm.calls": self.calls,
                "tracegrad.llm.cache_hits": self.cached,
                "gen_ai.usage.input_tokens": self.input_tokens,
                "gen_ai.usage.output_tokens": self.output_tokens,
                "tracegrad.usage.cost_usd": round(self.cost, 10),
            }
            if self.models:
                attrs["tracegrad.llm.models"] = sorted(self.models)
            if len(self.models) == 1:
                attrs["gen_ai.request.model"] = next(iter(self.models))
            if self.events > MAX_EVENTS:
                attrs["tracegrad.events_dropped"] = self.events - MAX_EVENTS
        return attrs


def operation(workflow: str,
              attributes: Mapping[str, Any] | None = None
              ) -> contextlib.AbstractContextManager[Operation | None]:
    """``with operation("backward") as op:`` -- a span for one tracegrad operation, or a
    null context yielding None when tracing is off."""
    b = _backend[0]
    if b is None:
        return _NULL
    return _operation(b, workflow, attributes or {})


@contextlib.contextmanager
def _operation(b: Backend, workflow: str, attributes: Mapping[str, Any]) -> Iterator[Operation]:
    attrs = {
        # GenAI semantic conventions: a multi-step GenAI workflow
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.workflow.name": f"tracegrad.{workflow}",
        "tracegrad.operation": workflow,
        **attributes,
    }
    with b.span(f"invoke_workflow tracegrad.{workflow}", "internal", attrs) as span:
        op = Operation(span)
        token = _open.set((*_open.get(), op))
        try:
            yield op
        finally:
            _open.reset(token)
            span.set(op.totals())


def traced_operation(workflow: str, attributes: Callable[..., Mapping[str, Any]]
                     ) -> Callable[[F], F]:
    """``@traced_operation("step", lambda self, step: {...})``: the function runs inside
    an :func:`operation` span; ``attributes`` gets its arguments (only when tracing)."""
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def traced(*args: Any, **kwargs: Any) -> Any:
            if _backend[0] is None:
                return fn(*args, **kwargs)
            with operation(workflow, attributes(*args, **kwargs)):
                return fn(*args, **kwargs)
        return traced  # type: ignore[return-value]
    return wrap


def llm_span(name: str,
             attributes: Mapping[str, Any]) -> contextlib.AbstractContextManager[SpanHandle | None]:
    b = _backend[0]
    return _NULL if b is None else b.span(name, "client", attributes)


def add_usage(model: str, input_tokens: int, output_tokens: int, cost: float,
              cached: bool) -> None:
    """Count one finished LLM call in every operation open around it."""
    for op in _open.get():
        op.add(model, input_tokens, output_tokens, cost, cached)


def record_feedback(op: Operation, variables: Iterable[Variable]) -> None:
    """The textual feedback on ``variables`` as span events (parameters first)."""
    ordered = sorted(variables, key=lambda v: not isinstance(v, Parameter))
    for v in ordered:
        for fb in v.grads:
            op.event("tracegrad.feedback", {
                "tracegrad.variable.name": v.name,
                "tracegrad.variable.role": v.role,
                "tracegrad.variable.is_parameter": isinstance(v, Parameter),
                "tracegrad.feedback.source": fb.source,
                "tracegrad.feedback.text": shorten(fb.text, TEXT_LIMIT),
            })


def record_backward(op: Operation, root: Variable, result: Any) -> None:
    record_feedback(op, topo_order(root))
    op.span.set({
        "tracegrad.backward.nodes": int(getattr(result, "nodes", 0) or 0),
        "tracegrad.backward.calls": int(getattr(result, "calls", 0) or 0),
    })


def record_step(op: Operation, result: Any) -> None:
    """What a ``step()`` did: which parameters changed (and to what), and its events."""
    updated = dict(getattr(result, "updated", None) or {})
    op.span.set({
        "tracegrad.step.updated": sorted(updated),
        "tracegrad.step.unchanged": [str(n) for n in getattr(result, "unchanged", None) or []],
        "tracegrad.step.calls": int(getattr(result, "calls", 0) or 0),
    })
    for name, value in updated.items():
        op.event("tracegrad.update", {"tracegrad.parameter.name": name,
                                      "tracegrad.parameter.value": shorten(value, TEXT_LIMIT)})
    for e in getattr(result, "events", None) or []:
        if isinstance(e, Mapping):
            op.event(f"tracegrad.optimizer.{e.get('event', 'event')}", {
                f"tracegrad.event.{k}": v if isinstance(v, bool | int | float) else shorten(v, 1000)
                for k, v in e.items() if k != "event" and v is not None
            })


def record_outcomes(op: Operation, metric: str, outcomes: list[Any]) -> None:
    """An evaluation's score on its span; each example as a ``gen_ai.evaluation.result``
    event, failures first (the ones worth reading), up to :data:`MAX_EVENTS`."""
    scores = [float(o.score) for o in outcomes]
    op.span.set({
        "tracegrad.eval.examples": len(outcomes),
        "tracegrad.eval.score": sum(scores) / len(scores) if scores else 0.0,
        "tracegrad.eval.failures": sum(1 for s in scores if s < 1.0),
        "tracegrad.eval.crashed": sum(1 for o in outcomes if getattr(o, "crashed", False)),
    })
    for o in sorted(outcomes, key=lambda o: float(o.score) >= 1.0):
        op.event("gen_ai.evaluation.result", {
            "gen_ai.evaluation.name": metric,
            "gen_ai.evaluation.score.value": float(o.score),
            "gen_ai.evaluation.score.label": "pass" if o.score >= 1.0 else "fail",
            "gen_ai.evaluation.explanation": shorten(o.explanation, 1000),
            "tracegrad.example.id": str(o.example.id),
        })


def traced_step(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an optimizer's ``step`` in an ``optimizer.step`` span (applied by
    :func:`tracegrad.tracing.instrument_optimizers` while tracing is on). A ``step`` calling
    ``super().step()`` makes one span, not two."""

    @functools.wraps(fn)
    def step(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _backend[0] is None or _in_step.get():
            return fn(self, *args, **kwargs)
        attrs = {"tracegrad.optimizer": type(self).__name__,
                 "tracegrad.step.sample_id": kwargs.get("sample_id") or (args[0] if args else None)}
        with operation("optimizer.step", {k: v for k, v in attrs.items() if v}) as op:
            assert op is not None
            record_feedback(op, getattr(self, "params", ()))
            token = _in_step.set(True)
            try:
                result = fn(self, *args, **kwargs)
            finally:
                _in_step.reset(token)
            record_step(op, result)
            return result

    return step
