"""Traced: one OpenTelemetry GenAI client span per LLM call, as an engine wrapper.

Like metering and call logs, tracing is a wrapper, so it composes with the others and the
engines themselves stay unaware of it. :func:`tracegrad.LLM` adds it only while tracing is
on; a Traced engine whose tracing was turned off since passes calls straight through.

The attributes are the GenAI semantic conventions' (``gen_ai.request.*``,
``gen_ai.response.*``, ``gen_ai.usage.*``, ``server.address``), plus tracegrad's own under
``tracegrad.*``: the call's purpose (forward, backward, optimizer, judge), cache hits and
the dollar cost from the pricing table. Nothing here names OpenTelemetry: the spans are
made by the backend :mod:`tracegrad.tracing` installs in :mod:`tracegrad.core.telemetry`.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any
from urllib.parse import urlsplit

from ..core import telemetry
from ..core.shorten import shorten
from ..redaction import collect_secrets
from .base import Completion, Engine, EngineWrapper, Request, content_to_text
from .pricing import cost, is_priced

__all__ = ["Traced", "completion_attributes", "request_attributes", "with_tracing"]

_PARAMS = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
    "n": "gen_ai.request.choice.count",
}
_PROVIDERS = {"OpenAIEngine": "openai", "MockLLM": "tracegrad.mock", "ReplayLLM": "tracegrad.replay"}
CONTENT_LIMIT = 20_000  # one message's text, when contents are captured


def _chain(engine: Any) -> list[Any]:
    out = []
    while engine is not None:
        out.append(engine)
        engine = getattr(engine, "inner", None)
    return out


def engine_facts(engine: Engine) -> dict[str, Any]:
    """What a chain's innermost engine says about where calls go: provider and server."""
    chain = _chain(engine)
    base = chain[-1]
    facts: dict[str, Any] = {
        "gen_ai.provider.name": _PROVIDERS.get(type(base).__name__, type(base).__name__.lower()),
    }
    facts["gen_ai.system"] = facts["gen_ai.provider.name"]  # the older name many backends read
    if type(base).__name__ == "OpenAIEngine":
        url = urlsplit(getattr(base, "base_url", None) or "https://api.openai.com/v1")
        if url.hostname:  # never the URL itself: it may carry user:password or a ?key=
            facts["server.address"] = url.hostname
            facts["server.port"] = url.port or (443 if url.scheme == "https" else 80)
    params = next((e.params for e in chain if isinstance(getattr(e, "params", None), dict)), {})
    facts["_params"] = params
    return facts


def _messages_json(messages: list[dict[str, Any]]) -> str:
    return json.dumps([
        {"role": m.get("role", "user"),
         "parts": [{"type": "text",
                    "content": shorten(content_to_text(m.get("content")), CONTENT_LIMIT)}]}
        for m in messages
    ], ensure_ascii=False)


def request_attributes(request: Request, engine: Engine, facts: dict[str, Any],
                       capture_content: bool = False) -> dict[str, Any]:
    model = request.model or engine.model
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": model,
        "gen_ai.output.type": "json" if request.response_format is not None else "text",
        "tracegrad.purpose": request.purpose,
        **{k: v for k, v in facts.items() if not k.startswith("_")},
    }
    params = {**facts.get("_params", {}), **request.params}
    for name, attr in _PARAMS.items():
        v = params.get(name)
        if isinstance(v, int | float) and not isinstance(v, bool):
            attrs[attr] = v
    stop = params.get("stop")
    if stop:
        attrs["gen_ai.request.stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if request.sample_id is not None:
        attrs["tracegrad.sample_id"] = request.sample_id
    if capture_content:
        attrs["gen_ai.input.messages"] = _messages_json(request.messages)
    return attrs


def completion_attributes(c: Completion, model: str, capture_content: bool = False
                          ) -> tuple[dict[str, Any], float]:
    """(attributes, dollars) of a finished call; a cache hit reports no usage and costs 0,
    so a backend summing tokens into cost does not bill it twice."""
    attrs: dict[str, Any] = {
        "gen_ai.response.model": c.model or model,
        "tracegrad.cache_hit": c.cached,
    }
    if c.finish_reason:
        attrs["gen_ai.response.finish_reasons"] = [c.finish_reason]
    usd = 0.0
    if not c.cached:
        usd = cost(model, c.usage, batch=c.batch)
        attrs.update({
            "gen_ai.usage.input_tokens": c.usage.prompt_tokens,
            "gen_ai.usage.output_tokens": c.usage.completion_tokens,
            "tracegrad.usage.estimated": c.usage.estimated,
            "tracegrad.usage.cost_usd": round(usd, 10),
            "tracegrad.usage.priced": is_priced(model),
        })
    if capture_content:
        attrs["gen_ai.output.messages"] = json.dumps([{
            "role": "assistant", "finish_reason": c.finish_reason or "stop",
            "parts": [{"type": "text", "content": shorten(c.text, CONTENT_LIMIT)}],
        }], ensure_ascii=False)
    return attrs, usd


def with_tracing(engine: Engine) -> Engine:
    """``Traced(engine)`` while tracing is on; ``engine`` itself (and a note of it) when off."""
    if telemetry.backend() is None:
        with contextlib.suppress(TypeError):  # an engine that cannot be weakly referenced
            telemetry.untraced_engines.add(engine)
        return engine
    return Traced(engine)


class Traced(EngineWrapper):
    """A span per call while tracing is on (``tg.enable_tracing()``); a pass-through while
    it is off. The engine's API key is handed to the scrubber, never to a span."""

    def __init__(self, inner: Engine) -> None:
        super().__init__(inner)
        self._facts = engine_facts(inner)
        telemetry.add_secrets(collect_secrets(inner))

    def _start(self, request: Request) -> Any:
        b = telemetry.backend()
        model = request.model or self.model
        attrs = request_attributes(request, self, self._facts,
                                   bool(getattr(b, "capture_content", False)))
        return telemetry.llm_span(f"chat {model}", attrs)

    def _finish(self, span: Any, request: Request, c: Completion) -> None:
        if span is None:  # tracing was turned off while the call was being prepared
            return
        model = request.model or self.model
        b = telemetry.backend()
        attrs, usd = completion_attributes(c, model, bool(getattr(b, "capture_content", False)))
        span.set(attrs)
        telemetry.add_usage(model, c.usage.prompt_tokens, c.usage.completion_tokens, usd, c.cached)

    def complete(self, request: Request) -> Completion:
        if telemetry.backend() is None:
            return self.inner.complete(request)
        with self._start(request) as span:
            c = self.inner.complete(request)
            self._finish(span, request, c)
            return c

    async def acomplete(self, request: Request) -> Completion:
        if telemetry.backend() is None:
            return await self.inner.acomplete(request)
        with self._start(request) as span:
            c = await self.inner.acomplete(request)
            self._finish(span, request, c)
            return c
