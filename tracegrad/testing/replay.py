"""ReplayLLM: record real LLM calls once, replay them offline forever after.

A cassette is JSONL -- one call per line, readable and diffable, never pickle -- keyed by
the sha256 of what decides the reply (model, messages, parameters, schema, sample_id),
so a replayed test fails loudly when the pipeline starts asking something new. Cassettes
are committed to repositories, so each entry is scrubbed of secrets before it is kept
(:mod:`tracegrad.redaction`): a replayed reply reads ``[REDACTED]`` where the key was.

Several engines may share one cassette (the pytest ``llm_cassette`` fixture records a
test's forward and backward models into one file): each writes under its own
``namespace``, so the same question asked of two models replays each model's answer.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Literal

from ..llm.base import BaseEngine, Completion, Engine, LLMError, Request
from ..llm.cache import completion_from_json, completion_to_json, request_key
from ..llm.calllog import _lock_for
from ..redaction import collect_secrets, scrub
from .mock import request_text

__all__ = ["CassetteMiss", "ReplayLLM"]

Mode = Literal["record", "replay", "auto"]


class CassetteMiss(LLMError):
    """A replayed request the cassette has no reply for: the pipeline asks something new.

    A subclass of :class:`LLMError` so pipelines handle it like any failed call; the pytest
    plugin also fails the test afterwards, in case the pipeline swallowed it.
    """

    def __init__(self, message: str, *, path: Path, request: Request | None = None,
                 namespace: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.request = request
        self.namespace = namespace


class ReplayLLM(BaseEngine):
    """Record ``inner``'s calls to ``cassette``, or answer from it.

    * ``"record"``: always call ``inner``; the cassette is rewritten from scratch.
    * ``"replay"``: never call anything; an unrecorded request raises :class:`LLMError`.
    * ``"auto"``: replay what is recorded, call ``inner`` (and append) for the rest.

    Identical requests recorded several times replay in recorded order, the last one
    repeating. ``namespace`` separates engines sharing one file; ``append`` makes record
    mode add to the file instead of starting it afresh (the caller cleared it once);
    ``hint`` ends the message of a miss (how to re-record).
    """

    def __init__(
        self,
        inner: Engine | None = None,
        cassette: str | os.PathLike[str] | None = None,
        mode: Mode = "auto",
        *,
        namespace: str | None = None,
        append: bool = False,
        hint: str = "re-record with mode='auto' or 'record'",
    ) -> None:
        if cassette is None:
            raise LLMError("ReplayLLM needs a cassette path")
        if mode not in ("record", "replay", "auto"):
            raise LLMError(f"ReplayLLM mode must be 'record', 'replay' or 'auto', not {mode!r}")
        if mode != "replay" and inner is None:
            raise LLMError(f"ReplayLLM in {mode!r} mode needs an inner engine to record from")
        self.inner = inner
        self.path = Path(cassette)
        self.mode = mode
        self.namespace = namespace
        self.hint = hint
        self._lock = threading.Lock()
        self._file_lock = _lock_for(self.path)  # engines sharing the file never interleave
        self._entries: dict[str, list[dict[str, Any]]] = {}
        self._cursor: dict[str, int] = {}
        self._truncate = mode == "record" and not append
        self._recorded_model: str | None = None
        self.recorded = 0
        self.replayed = 0
        self.misses: list[CassetteMiss] = []
        if mode != "record":
            self._load()

    @property
    def model(self) -> str:  # type: ignore[override]
        """The recording engine's model, so metering and pricing replay as recorded."""
        return getattr(self.inner, "model", None) or self._recorded_model or "replay"

    @property
    def max_concurrency(self) -> int | None:  # type: ignore[override]
        return getattr(self.inner, "max_concurrency", None)

    def _load(self) -> None:
        if not self.path.exists():
            if self.mode == "replay":
                raise LLMError(f"ReplayLLM cassette {self.path} does not exist; record it first")
            return
        # bytes, split on "\n" only: a line that is not UTF-8 (a pickle, a binary file) is
        # reported with its number instead of failing the whole read
        for n, raw in enumerate(self.path.read_bytes().split(b"\n"), 1):
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw.decode("utf-8"))
                key = entry["key"]
                if not isinstance(key, str) or not isinstance(entry.get("namespace"), str | None):
                    raise TypeError(key)
                # shape check: the completion must read back as one
                completion_from_json(entry["completion"], Request(messages=[]), cached=False)
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
                raise LLMError(
                    f"cassette {self.path} line {n} is not a recorded call"
                ) from None
            if entry.get("namespace") != self.namespace:
                continue
            self._recorded_model = self._recorded_model or entry.get("engine_model")
            self._entries.setdefault(key, []).append(entry)

    @staticmethod
    def key(request: Request) -> str:
        return request_key(request)

    def _key(self, request: Request) -> str:
        """The key in this engine's namespace (no namespace: the plain key, as always)."""
        base = request_key(request)
        if self.namespace is None:
            return base
        return hashlib.sha256(f"{self.namespace}\0{base}".encode()).hexdigest()

    def _lookup(self, request: Request) -> Completion | None:
        key = self._key(request)
        with self._lock:
            entries = self._entries.get(key)
            if not entries:
                return None
            i = self._cursor.get(key, 0)
            self._cursor[key] = i + 1
            self.replayed += 1
            data = entries[min(i, len(entries) - 1)]["completion"]
        return completion_from_json(data, request, cached=False)

    def _missing(self, request: Request) -> CassetteMiss:
        text = request_text(request)
        who = f", engine {self.namespace!r}" if self.namespace else ""
        err = CassetteMiss(
            f"ReplayLLM: request not recorded in {self.path} (mode={self.mode!r}, "
            f"{request.purpose} call{who}); {self.hint}. Request starts: {text[:200]!r}",
            path=self.path,
            request=request,
            namespace=self.namespace,
        )
        with self._lock:
            self.misses.append(err)
        return err

    def _record(self, request: Request, c: Completion) -> None:
        fmt = request.response_format
        entry: dict[str, Any] = {
            "key": self._key(request),
            **({"namespace": self.namespace} if self.namespace is not None else {}),
            "engine_model": getattr(self.inner, "model", None),
            "request": {
                "model": request.model,
                "purpose": request.purpose,
                "params": request.params,
                "response_format": fmt.__name__ if fmt is not None else None,
                "sample_id": request.sample_id,
                "summary": request_text(request)[:500],
            },
            "completion": completion_to_json(c),
        }
        entry = scrub(entry, collect_secrets(self.inner))
        line = json.dumps(entry, ensure_ascii=False, default=str)
        with self._file_lock, self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w" if self._truncate else "a", encoding="utf-8") as f:
                f.write(line + "\n")
            self._truncate = False
            self._entries.setdefault(entry["key"], []).append(entry)
            self.recorded += 1

    def complete(self, request: Request) -> Completion:
        if self.mode != "record":
            hit = self._lookup(request)
            if hit is not None:
                return hit
            if self.mode == "replay":
                raise self._missing(request)
        assert self.inner is not None
        c = self.inner.complete(request)
        self._record(request, c)
        return c

    async def acomplete(self, request: Request) -> Completion:
        if self.mode != "record":
            hit = self._lookup(request)
            if hit is not None:
                return hit
            if self.mode == "replay":
                raise self._missing(request)
        assert self.inner is not None
        c = await self.inner.acomplete(request)
        self._record(request, c)
        return c
