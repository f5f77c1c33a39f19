"""``LLM("openai:gpt-4o-mini")``: an engine with the production wrappers already on.

Users should not have to know the wrapper order to get safe defaults, so the factory
builds it: ``Meter -> [Traced] -> [CallLog] -> [Cache] -> [BatchRouter] -> Limits -> engine``. The meter is outermost so
it sees cache hits (free) and can refuse a call before anything else runs; the cache sits
above the limits so hits neither wait for a slot nor count against rate limits; the call
log sits above the cache so it records hits too. Traced (OpenTelemetry spans) is added only
while tracing is on, so an untraced engine has no extra layer at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .base import ConfigurationError, Engine
from .batch import BatchRouter
from .cache import Cache, cache_disabled_by_env
from .calllog import CallLog
from .limits import DEFAULT_MAX_CONCURRENCY, Limits
from .meter import Budget, Meter
from .openai import OpenAIEngine
from .telemetry import with_tracing

__all__ = ["LLM", "parse_spec"]

_PROVIDERS = ("openai", "mock")


def parse_spec(spec: str) -> tuple[str, str]:
    """``"openai:gpt-4o"`` -> (openai, gpt-4o); a bare name is an OpenAI model.

    Only known providers are split off, so model names with colons (``llama3.1:8b``)
    survive intact.
    """
    spec = spec.strip()
    provider, sep, rest = spec.partition(":")
    if provider == "mock":
        return "mock", rest or "mock"
    if sep and provider in _PROVIDERS:
        if not rest:
            raise ConfigurationError(
                f"model spec {spec!r} names no model, e.g. 'openai:gpt-4o-mini'"
            )
        return provider, rest
    if not spec:
        raise ConfigurationError("empty model spec; use e.g. 'openai:gpt-4o-mini' or 'mock'")
    return "openai", spec


def LLM(
    spec: str = "openai:gpt-4o-mini",
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    cache: bool | str | os.PathLike[str] | None = None,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    start_concurrency: int | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    max_retries: int = 4,
    backoff_base: float = 0.5,
    budget: Budget | None = None,
    call_log: str | os.PathLike[str] | None = None,
    meter: Meter | None = None,
    timeout: float = 60.0,
    temperature: float | None = None,
    max_tokens: int | None = None,
    completion_limits: dict[str, int] | None = None,
    **params: Any,
) -> Meter:
    """Build a ready-to-use engine from a spec such as ``"openai:gpt-4o-mini"`` or ``"mock"``.

    ``cache``: True (default for OpenAI models; ``$TRACEGRAD_NO_CACHE=1`` turns it off),
    False, or a path for the SQLite file. ``meter``: an existing Meter whose ledger and
    budget this engine should share. ``max_tokens`` caps every reply; ``completion_limits``
    changes the per-purpose default caps instead (``{"optimizer": 4096}``), see
    :data:`~tracegrad.llm.base.DEFAULT_COMPLETION_LIMITS`. ``timeout`` bounds each attempt
    as a whole. ``max_concurrency`` is the ceiling of calls in flight; the limit starts at
    ``start_concurrency`` (default: the ceiling) and adapts, see
    :class:`~tracegrad.llm.limits.AdaptiveLimit`. Other keywords are default sampling parameters for OpenAI models, or
    MockLLM options (``replies``, ``default``, ``latency``) for mocks.
    """
    provider, model = parse_spec(spec)
    engine: Engine
    if provider == "mock":
        from .mock import MockLLM

        mock_kw = {k: params.pop(k) for k in ("replies", "default", "latency") if k in params}
        engine = MockLLM(model=model, max_concurrency=max_concurrency, **mock_kw)
        use_cache = cache is not None and cache is not False
    else:
        engine = OpenAIEngine(
            model,
            base_url=base_url,
            api_key=api_key,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout=timeout,
            max_concurrency=max_concurrency,
            completion_limits=completion_limits,
            **params,
        )
        use_cache = cache is not False
    engine = Limits(
        engine,
        max_concurrency,
        start_concurrency=start_concurrency,
        rpm=rpm,
        tpm=tpm,
        max_retries=max_retries,
        backoff_base=backoff_base,
    )
    if provider != "mock":  # below the cache, above the limits: see tracegrad.llm.batch
        engine = BatchRouter(engine)
    if use_cache and not cache_disabled_by_env():
        path = None if cache is None or cache is True else Path(cache)  # type: ignore[arg-type]
        engine = Cache(engine, path)
    if call_log is not None:
        engine = CallLog(engine, call_log)
    engine = with_tracing(engine)
    if meter is not None:
        return Meter(engine, budget, share=meter)
    return Meter(engine, budget)
