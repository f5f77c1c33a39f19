"""OpenTelemetry tracing: see a run's LLM calls, backward passes, steps and evaluations in
Jaeger, Phoenix, Langfuse or any OTLP backend.

Off unless asked for -- ``tg.enable_tracing()`` or ``TRACEGRAD_OTEL=1`` -- and then spans
follow the OpenTelemetry GenAI semantic conventions: one ``chat {model}`` client span per
LLM call (``gen_ai.request.model``, ``gen_ai.usage.input_tokens``/``output_tokens``, ...,
plus ``tracegrad.usage.cost_usd``), and ``invoke_workflow tracegrad.<op>`` spans for
backward, optimizer steps and evaluations that total the calls inside them and carry the
textual feedback, the new parameter values and per-example scores as events.

This is the only module that imports OpenTelemetry (the ``otel`` extra), and only when
tracing is enabled. Every string it hands to OpenTelemetry is scrubbed of API keys first.
Message contents are recorded only with ``capture_content=True`` (or
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``), as the conventions advise.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from .core import telemetry
from .llm.base import ConfigurationError, Deferred
from .llm.calllog import redact

__all__ = ["disable_tracing", "enable_tracing", "instrument_optimizers", "span", "traced",
           "tracing_enabled", "uninstrument_optimizers"]

_TRUE = ("1", "true", "yes", "on")
_state: dict[str, Any] = {"provider": None, "owned": False, "root": None}


def _scrub(value: Any) -> Any:
    """An attribute value OpenTelemetry accepts, with no secret in it."""
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [_scrub(v) if isinstance(v, bool | int | float) else _scrub(str(v)) for v in value]
    return redact(str(value), telemetry.secrets())


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _scrub(v) for k, v in attributes.items() if v is not None}


class _Handle:
    def __init__(self, span: Any) -> None:
        self._span = span

    def set(self, attributes: Mapping[str, Any]) -> None:
        self._span.set_attributes(_clean(attributes))

    def event(self, name: str, attributes: Mapping[str, Any]) -> None:
        self._span.add_event(name, _clean(attributes))

    def error(self, exc: BaseException) -> None:
        from opentelemetry.trace import Status, StatusCode

        message = redact(str(exc), telemetry.secrets())[:1000]
        self._span.set_attribute("error.type", type(exc).__qualname__)
        # the semantic conventions' exception event, scrubbed: record_exception would
        # copy the message (and its traceback) unscrubbed
        self._span.add_event("exception", {"exception.type": type(exc).__qualname__,
                                           "exception.message": message})
        self._span.set_status(Status(StatusCode.ERROR, message))


class _Backend:
    """tracegrad's hooks (:mod:`tracegrad.core.telemetry`) on an OpenTelemetry tracer."""

    def __init__(self, tracer: Any, capture_content: bool) -> None:
        from opentelemetry.trace import SpanKind

        self.tracer = tracer
        self.capture_content = capture_content
        self._kinds = {"client": SpanKind.CLIENT, "internal": SpanKind.INTERNAL}

    @contextlib.contextmanager
    def span(self, name: str, kind: str, attributes: Mapping[str, Any]) -> Iterator[_Handle]:
        with self.tracer.start_as_current_span(
            name, kind=self._kinds[kind], attributes=_clean(attributes),
            record_exception=False, set_status_on_exception=False,
        ) as s:
            handle = _Handle(s)
            try:
                yield handle
            except Deferred:  # left for a provider batch: not an error, answered later
                handle.set({"tracegrad.batch.deferred": True})
                raise
            except BaseException as e:
                handle.error(e)
                raise


def _exporter(endpoint: str | None, headers: Mapping[str, str] | None) -> Any:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ConfigurationError(
            "exporting to an OTLP endpoint needs the OTLP exporter: pip install 'tracegrad[otel]' "
            "(or pass exporter=... / tracer_provider=...)"
        ) from None
    if endpoint and not endpoint.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    # with no endpoint the exporter follows OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, as usual
    return OTLPSpanExporter(endpoint=endpoint, headers=dict(headers) if headers else None)


def _provider(exporter: Any, endpoint: str | None, headers: Mapping[str, str] | None,
              service_name: str, batch: bool) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporter = exporter if exporter is not None else _exporter(endpoint, headers)
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch
                                else SimpleSpanProcessor(exporter))
    return provider


def enable_tracing(
    exporter: Any = None,
    *,
    endpoint: str | None = None,
    headers: Mapping[str, str] | None = None,
    tracer_provider: Any = None,
    service_name: str = "tracegrad",
    capture_content: bool | None = None,
    batch: bool = True,
) -> Any:
    """Turn tracing on; returns the OpenTelemetry ``TracerProvider`` in use.

    Spans go to ``tracer_provider`` if given (yours, already configured), else to a new
    SDK provider exporting to ``exporter`` (any SpanExporter), else over OTLP/HTTP to
    ``endpoint`` (e.g. ``http://localhost:4318``, Jaeger and Phoenix; ``headers`` for a key,
    e.g. Langfuse) or to whatever ``OTEL_EXPORTER_OTLP_ENDPOINT`` says. ``batch=False``
    exports each span as it ends (tests). Engines built by :func:`tracegrad.LLM` from now on
    are traced; wrap others with :func:`traced`.
    """
    try:
        from opentelemetry import trace  # noqa: F401 -- fail here, clearly, not mid-run
    except ImportError:
        raise ConfigurationError(
            "tracing needs OpenTelemetry: pip install 'tracegrad[otel]'") from None
    disable_tracing()
    owned = tracer_provider is None
    provider = tracer_provider or _provider(exporter, endpoint, headers, service_name, batch)
    if capture_content is None:
        flag = os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
        capture_content = flag.strip().lower() in _TRUE
    from . import __version__

    tracer = provider.get_tracer("tracegrad", __version__)
    telemetry.install(_Backend(tracer, capture_content))
    instrument_optimizers()
    _state.update(provider=provider, owned=owned)
    if len(telemetry.untraced_engines):
        warnings.warn(
            f"{len(telemetry.untraced_engines)} engine(s) were built before enable_tracing() and "
            "are not traced: build engines after enabling, or wrap them with "
            "tracegrad.tracing.traced(engine)", stacklevel=2)
    return provider


def disable_tracing() -> None:
    """Turn tracing off; a provider tracegrad created is flushed and shut down."""
    root = _state.get("root")
    if root is not None:
        span_, token = root
        from opentelemetry import context

        span_.end()
        with contextlib.suppress(ValueError):  # detached from another context at exit
            context.detach(token)
    telemetry.uninstall()
    uninstrument_optimizers()
    provider, owned = _state["provider"], _state["owned"]
    _state.update(provider=None, owned=False, root=None)
    if provider is not None and owned:
        provider.shutdown()


def _optimizer_classes() -> list[type]:
    from .optim.base import Optimizer

    out: list[type] = []
    todo = [Optimizer]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


def instrument_optimizers() -> None:
    """Wrap the ``step`` of every optimizer class in an ``optimizer.step`` span.

    Done when tracing is enabled and undone when it is disabled -- the OpenTelemetry
    instrumentation pattern -- rather than at class creation, so with tracing off ``step``
    is the optimizer's own function: no extra frame, and its warnings still point at the
    caller. A class defined after enabling is covered through the ``step`` it inherits or
    calls with ``super()``; one that defines its own ``step`` from scratch is not.
    """
    for cls in _optimizer_classes():
        own = cls.__dict__.get("step")
        if callable(own) and not getattr(own, "__tracegrad_traced__", False):
            wrapped = telemetry.traced_step(own)
            wrapped.__tracegrad_traced__ = True  # type: ignore[attr-defined]
            cls.step = wrapped  # type: ignore[attr-defined]


def uninstrument_optimizers() -> None:
    for cls in _optimizer_classes():
        own = cls.__dict__.get("step")
        if getattr(own, "__tracegrad_traced__", False):
            cls.step = own.__wrapped__  # type: ignore[attr-defined, union-attr]


def tracing_enabled() -> bool:
    return telemetry.backend() is not None


def traced(engine: Any) -> Any:
    """``engine`` with a GenAI span per call, for engines not built by :func:`tracegrad.LLM`
    (a MockLLM, your own). Costs nothing while tracing is off."""
    from .llm.telemetry import Traced

    return Traced(engine)


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """Group your own code: ``with tg.tracing.span("nightly optimize"): tg.optimize(...)``
    makes one trace of everything inside. A no-op while tracing is off."""
    with telemetry.operation(name, {f"tracegrad.{k}": v for k, v in attributes.items()}) as op:
        yield op


def enable_from_env() -> None:
    """``TRACEGRAD_OTEL=1``: trace this process (the CLI included) into one trace.

    Called when tracegrad is imported. Missing packages warn instead of failing the import.
    """
    if os.environ.get("TRACEGRAD_OTEL", "").strip().lower() not in _TRUE:
        return
    try:
        enable_tracing(service_name=os.environ.get("OTEL_SERVICE_NAME") or "tracegrad")
    except ConfigurationError as e:
        warnings.warn(f"TRACEGRAD_OTEL is set but tracing is off: {e}", stacklevel=2)
        return
    from opentelemetry import context, trace

    # one root per process, so a CLI run is one trace; only the command's name, never its
    # arguments (they may hold a key)
    cmd = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    sub = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1].isidentifier() else ""
    root = telemetry.backend().tracer.start_span(  # type: ignore[union-attr]
        f"invoke_workflow {cmd} {sub}".strip(),
        attributes={"gen_ai.operation.name": "invoke_workflow",
                    "gen_ai.workflow.name": f"{cmd} {sub}".strip()})
    _state["root"] = (root, context.attach(trace.set_span_in_context(root)))
    atexit.register(disable_tracing)
