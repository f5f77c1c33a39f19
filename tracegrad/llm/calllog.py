"""CallLog: a JSONL record of every LLM call, for debugging a run after the fact.

The log is meant to be shared (attached to bug reports, committed next to a run), so it
must never hold a credential: each line is scrubbed (:mod:`tracegrad.redaction`) of the
engines' keys, every other known secret, anything shaped like an OpenAI key (``sk-...``)
and Authorization/Bearer values before it is written. Images are logged as their size, not their bytes.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..redaction import REDACTED, collect_secrets, scrub_text
from .base import Completion, Deferred, Engine, EngineWrapper, Request

__all__ = ["REDACTED", "CallLog", "redact"]

_DATA_URL = re.compile(r"data:([\w.+/-]+);base64,([A-Za-z0-9+/=]+)")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with ``secrets``, every known secret and credential shapes removed (see
    :mod:`tracegrad.redaction`, which every writer shares)."""
    return scrub_text(text, secrets)


def _shorten_data_urls(text: str) -> str:
    return _DATA_URL.sub(
        lambda m: f"data:{m.group(1)};base64,<{len(m.group(2)) * 3 // 4} bytes>", text
    )


def _over_limit(c: Completion) -> bool:
    """The server reported more reply tokens than the limit it was sent (a Meter stops on it)."""
    return (
        c.completion_limit is not None
        and not c.usage.estimated
        and c.usage.completion_tokens > c.completion_limit
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    """One lock per file, so several engines logging to one file never interleave lines."""
    key = str(path.resolve())
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


class CallLog(EngineWrapper):
    """Append one JSON line per call to ``path``: request, reply, timing, purpose, errors.

    A reply that cannot be trusted whole says why in ``response.problem`` ("length",
    "content_filter", "empty"); ``response.over_limit`` marks a server that reported more
    reply tokens than ``response.completion_limit``, the limit it was sent.

    ``secrets`` adds strings to scrub besides the engine's own key; ``max_text`` caps each
    logged text so a run with huge replies keeps a readable log.
    """

    def __init__(
        self,
        inner: Engine,
        path: str | os.PathLike[str],
        *,
        secrets: Iterable[str] = (),
        max_text: int = 20_000,
    ) -> None:
        super().__init__(inner)
        self.path = Path(path)
        self.max_text = max_text
        self._secrets = list(secrets)
        self._lock = _lock_for(self.path)

    def _entry(
        self,
        request: Request,
        t0: float,
        started: str,
        completion: Completion | None,
        error: BaseException | None,
    ) -> dict[str, Any]:
        fmt = request.response_format
        entry: dict[str, Any] = {
            "time": started,
            "duration_s": round(time.perf_counter() - t0, 4),
            "purpose": request.purpose,
            "model": request.model or self.model,
            "request": {
                "messages": request.messages,
                "params": request.params,
                "response_format": fmt.__name__ if fmt is not None else None,
                "sample_id": request.sample_id,
                "cache": request.cache,
            },
            "response": None,
            "cached": False,
            "error": None,
        }
        if request.tools:  # only when given: other entries keep their shape
            entry["request"]["tools"] = [t.get("function", {}).get("name") for t in request.tools]
        if completion is not None:
            entry["cached"] = completion.cached
            entry["response"] = {
                "text": completion.text[: self.max_text],
                "truncated": len(completion.text) > self.max_text,
                "model": completion.model,
                "finish_reason": completion.finish_reason,
                "problem": completion.problem,
                "completion_limit": completion.completion_limit,
                "over_limit": _over_limit(completion),
                **({"tool_calls": [t.to_wire() for t in completion.tool_calls]}
                   if completion.tool_calls else {}),
                "usage": {
                    "prompt_tokens": completion.usage.prompt_tokens,
                    "completion_tokens": completion.usage.completion_tokens,
                    "estimated": completion.usage.estimated,
                },
                "parsed": _jsonable(completion.parsed),
                "latency_s": round(completion.latency_s, 4),
            }
        if error is not None:
            entry["error"] = {
                "type": type(error).__name__,
                "message": str(error),
                "status": getattr(error, "status", None),
            }
        return entry

    def _write(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False, default=str)
        line = redact(_shorten_data_urls(line), [*self._secrets, *collect_secrets(self.inner)])
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # one write per line in append mode: lines from several processes do not interleave
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    def complete(self, request: Request) -> Completion:
        t0, started = time.perf_counter(), datetime.now(UTC).isoformat()
        try:
            c = self.inner.complete(request)
        except Deferred:  # left for a provider batch: logged when it is answered
            raise
        except BaseException as e:
            self._write(self._entry(request, t0, started, None, e))
            raise
        self._write(self._entry(request, t0, started, c, None))
        return c

    async def acomplete(self, request: Request) -> Completion:
        t0, started = time.perf_counter(), datetime.now(UTC).isoformat()
        try:
            c = await self.inner.acomplete(request)
        except Deferred:  # left for a provider batch: logged when it is answered
            raise
        except BaseException as e:
            self._write(self._entry(request, t0, started, None, e))
            raise
        self._write(self._entry(request, t0, started, c, None))
        return c

    def entries(self) -> list[dict[str, Any]]:
        """The log read back (for tests and reports)."""
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
