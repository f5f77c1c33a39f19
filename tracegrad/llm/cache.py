"""Cache: identical requests are answered from disk, costing nothing and sending nothing.

Re-running an optimization (after a crash, to tweak a report, in CI) should not pay for
the same calls twice. The store is one SQLite file in WAL mode so that several threads and
several processes (parallel experiments) can share it. The key covers everything that
decides a reply -- engine identity, model, messages, sampling parameters, output schema
and ``sample_id`` -- and nothing that does not (purpose, bookkeeping).

Replies that are cut off (finish_reason "length"), empty, or fail the requested schema are
not stored: they are failures, and the next run deserves a fresh attempt. Replies longer
than ``max_reply_bytes`` are returned but not stored either (counted as ``skipped_large``):
one runaway reply would otherwise grow the shared file by megabytes and be read back whole
on every later hit.

Replies that hold a secret (a server that echoes the ``Authorization`` header, see
:mod:`tracegrad.redaction`) are returned but not stored either (``skipped_secret``): the
cache is the longest-lived file tracegrad writes, shared by every run and project, so a
key must never reach it; and storing the reply scrubbed would make every later hit return
text the server never sent, with no fresh attempt at a clean reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..redaction import collect_secrets, find_secret
from .base import Completion, ConfigurationError, Engine, EngineWrapper, Request, ToolCall, Usage
from .structured import parse_as

__all__ = [
    "DEFAULT_MAX_REPLY_BYTES",
    "Cache",
    "CacheWarning",
    "default_cache_path",
    "request_key",
    "canonical_json",
    "completion_to_json",
    "completion_from_json",
]

KEY_VERSION = 1
_LOCK_RETRIES = 40

DEFAULT_MAX_REPLY_BYTES = 1024 * 1024
"""Largest reply text stored, in UTF-8 bytes (``TRACEGRAD_CACHE_MAX_REPLY_BYTES``)."""
MAX_REPLY_ENV = "TRACEGRAD_CACHE_MAX_REPLY_BYTES"


class CacheWarning(UserWarning):
    """The cache could not be used as asked; calls still go to the server."""


def default_cache_path() -> Path:
    """``$TRACEGRAD_CACHE_DIR/cache.sqlite3``, else ``~/.cache/tracegrad/cache.sqlite3``."""
    d = os.environ.get("TRACEGRAD_CACHE_DIR")
    if d:
        return Path(d).expanduser() / "cache.sqlite3"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tracegrad" / "cache.sqlite3"


def cache_disabled_by_env() -> bool:
    return os.environ.get("TRACEGRAD_NO_CACHE", "").strip().lower() in {"1", "true", "yes", "on"}


def max_reply_bytes_from_env() -> int:
    """The cap from ``$TRACEGRAD_CACHE_MAX_REPLY_BYTES``, else the default.

    A value that is not a positive whole number stops with a ConfigurationError rather than
    silently caching everything (or nothing).
    """
    raw = os.environ.get(MAX_REPLY_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_REPLY_BYTES
    try:
        return _positive_cap(int(raw))
    except ValueError:
        raise ConfigurationError(
            f"{MAX_REPLY_ENV}={raw!r} is not a positive whole number of bytes"
        ) from None


def _positive_cap(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"max_reply_bytes must be a positive number of bytes, got {n!r}")
    return n


def _utf8_size(text: str) -> int:
    # surrogatepass: a lone surrogate from a broken JSON escape must not make measuring fail
    return len(text.encode("utf-8", "surrogatepass"))


def _stored_json(obj: Any) -> str:
    """JSON for a cache row: UTF-8 as is, except that a reply holding a lone surrogate
    (which SQLite cannot store as UTF-8) is written with escapes, which read back the same."""
    text = json.dumps(obj, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj)
    return text


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def engine_fingerprint(engine: Any) -> dict[str, Any]:
    """What an engine chain contributes to a reply besides the request."""
    e = engine
    while e is not None:
        fp = getattr(e, "cache_fingerprint", None)
        if callable(fp):
            return dict(fp())
        e = getattr(e, "inner", None)
    return {"model": getattr(engine, "model", None)}


def request_key(request: Request, engine: dict[str, Any] | None = None) -> str:
    """sha256 of the canonical JSON of everything that decides the reply."""
    fmt = request.response_format
    payload = {
        "v": KEY_VERSION,
        "engine": {**(engine or {}), "model": request.model or (engine or {}).get("model")},
        "messages": request.messages,
        "params": request.params,
        "response_format": fmt.model_json_schema() if fmt is not None else None,
        "sample_id": request.sample_id,
    }
    if request.tools:  # only when given: keys of requests without tools stay as they were
        payload["tools"] = request.tools
    # surrogatepass: a lone surrogate (a model's broken escape, quoted in a later prompt)
    # must not make the key fail; every valid string hashes exactly as before
    return hashlib.sha256(canonical_json(payload).encode("utf-8", "surrogatepass")).hexdigest()


def _jsonable_parsed(parsed: Any) -> Any:
    if parsed is None:
        return None
    if isinstance(parsed, BaseModel):
        return parsed.model_dump(mode="json")
    try:
        json.dumps(parsed)
    except (TypeError, ValueError):
        return None
    return parsed


def completion_to_json(c: Completion) -> dict[str, Any]:
    extra = {"tool_calls": [t.to_wire() for t in c.tool_calls]} if c.tool_calls else {}
    return {
        **extra,
        "text": c.text,
        "parsed": _jsonable_parsed(c.parsed),
        "usage": {
            "prompt_tokens": c.usage.prompt_tokens,
            "completion_tokens": c.usage.completion_tokens,
            "estimated": c.usage.estimated,
        },
        "model": c.model,
        "finish_reason": c.finish_reason,
    }


def completion_from_json(d: dict[str, Any], request: Request, *, cached: bool) -> Completion:
    text = str(d.get("text") or "")
    parsed: Any = d.get("parsed")
    fmt = request.response_format
    if fmt is not None:
        try:
            parsed = fmt.model_validate(parsed) if parsed is not None else parse_as(text, fmt)
        except ValueError:  # pydantic's ValidationError is a ValueError
            parsed = None
    u = d.get("usage") or {}
    return Completion(
        text=text,
        model=str(d.get("model") or ""),
        usage=Usage(
            int(u.get("prompt_tokens", 0)),
            int(u.get("completion_tokens", 0)),
            bool(u.get("estimated", False)),
        ),
        parsed=parsed,
        cached=cached,
        finish_reason=d.get("finish_reason"),
        tool_calls=[ToolCall.from_wire(t) for t in d.get("tool_calls") or []],
    )


def _is_lock_error(e: sqlite3.Error) -> bool:
    msg = str(e).lower()
    return isinstance(e, sqlite3.OperationalError) and ("locked" in msg or "busy" in msg)


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS replies ("
    " key TEXT PRIMARY KEY, value TEXT NOT NULL, model TEXT, created REAL)"
)
# totals kept in the file, so `tracegrad cache info` can tell what earlier runs skipped
_COUNTERS = "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL)"


class Cache(EngineWrapper):
    """A SQLite-backed reply cache. ``request.cache=False`` or ``enabled=False`` bypasses it.

    Hits return ``cached=True`` and the usage recorded when the reply was first paid for;
    the meter counts them as cached calls, not as spend. ``max_reply_bytes`` (default
    ``$TRACEGRAD_CACHE_MAX_REPLY_BYTES``, else 1 MiB) caps the reply text stored per entry.
    """

    def __init__(
        self,
        inner: Engine,
        path: str | os.PathLike[str] | None = None,
        *,
        enabled: bool | None = None,
        max_reply_bytes: int | None = None,
    ) -> None:
        super().__init__(inner)
        self.path = Path(path).expanduser() if path is not None else default_cache_path()
        self.enabled = (not cache_disabled_by_env()) if enabled is None else enabled
        self.max_reply_bytes = (max_reply_bytes_from_env() if max_reply_bytes is None
                                else _positive_cap(max_reply_bytes))
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self.hits = 0
        self.misses = 0

    # -- storage ---------------------------------------------------------------
    def _create(self) -> None:
        """Build a new cache file under a private name and link it into place.

        A process killed while creating the file must not leave a cache without its table:
        the schema exists before the file appears under its real name.
        """
        tmp = self.path.with_name(f".{self.path.name}.new-{os.getpid()}-{threading.get_ident()}")
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(_SCHEMA)
                conn.execute(_COUNTERS)
            finally:
                conn.close()
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # another process created it first; use theirs
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(str(tmp) + suffix)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self._create()
        conn = sqlite3.connect(
            self.path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
            conn.execute(_COUNTERS)  # files written before the counters existed get them
            conn.execute("SELECT count(*) FROM replies").fetchone()
        except BaseException:
            conn.close()
            raise
        return conn

    def _move_aside(self, error: sqlite3.Error) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{os.getpid()}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            try:
                src.rename(str(aside) + suffix)
            except FileNotFoundError:
                pass  # another process moved it already
        warnings.warn(
            f"tracegrad cache {self.path} was unreadable ({error}); moved it to {aside} and "
            "started an empty cache",
            CacheWarning,
            stacklevel=4,
        )

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        # a connection must not cross fork(): abandon the parent's and open our own
        self._conn, self._pid = None, os.getpid()
        for attempt in range(_LOCK_RETRIES):
            try:
                self._conn = self._connect()
                return self._conn
            except sqlite3.Error as e:
                if _is_lock_error(e):
                    time.sleep(0.02 * (attempt + 1))
                    continue
                if isinstance(e, sqlite3.OperationalError) and "unable to open" in str(e):
                    raise
                self._move_aside(e)
        raise sqlite3.OperationalError(
            f"cache {self.path} could not be opened: other writers kept it"
        )

    def _run(self, fn: Any, *, force: bool = False) -> Any:
        """Run ``fn(conn)`` under our lock, riding out other processes' write locks."""
        with self._lock:
            if not (self.enabled or force):
                return None
            for attempt in range(_LOCK_RETRIES):
                try:
                    return fn(self._connection())
                except (sqlite3.Error, OSError) as e:
                    if (
                        isinstance(e, sqlite3.Error)
                        and _is_lock_error(e)
                        and attempt < _LOCK_RETRIES - 1
                    ):
                        time.sleep(0.01 * (attempt + 1))
                        continue
                    self._disable(e)
                    return None
        return None

    def _disable(self, error: Exception) -> None:
        self.enabled = False
        warnings.warn(
            f"tracegrad cache {self.path} failed ({type(error).__name__}: {error}); caching is "
            "off for this engine. Delete the file or point TRACEGRAD_CACHE_DIR elsewhere.",
            CacheWarning,
            stacklevel=5,
        )

    # -- keyed access ----------------------------------------------------------
    def key(self, request: Request) -> str:
        return request_key(request, engine_fingerprint(self.inner))

    def _usable(self, request: Request) -> bool:
        return self.enabled and request.cache

    def get(self, request: Request) -> Completion | None:
        if not self._usable(request):
            return None
        key = self.key(request)
        row = self._run(
            lambda c: c.execute("SELECT value FROM replies WHERE key = ?", (key,)).fetchone()
        )
        if row is None:
            return None
        try:
            return completion_from_json(json.loads(row[0]), request, cached=True)
        except (ValueError, TypeError, AttributeError, RecursionError):
            return None  # a row this version cannot read (or a tampered one): a miss

    def contains(self, request: Request) -> bool:
        """Whether ``request`` would be answered from the cache (no side effects)."""
        if not self._usable(request):
            return False
        key = self.key(request)
        row = self._run(
            lambda c: c.execute("SELECT 1 FROM replies WHERE key = ?", (key,)).fetchone()
        )
        return row is not None

    @staticmethod
    def storable(request: Request, c: Completion) -> bool:
        if c.finish_reason == "length" or (not c.text.strip() and not c.tool_calls):
            return False
        return not (request.response_format is not None and c.parsed is None)

    def put(self, request: Request, c: Completion) -> bool:
        if not self._usable(request) or not self.storable(request, c):
            return False
        if _utf8_size(c.text) > self.max_reply_bytes:
            self._count("skipped_large")
            return False
        value = _stored_json(completion_to_json(c))
        if find_secret(value, collect_secrets(self.inner)) is not None:
            self._count("skipped_secret")
            return False
        key = self.key(request)
        self._run(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO replies (key, value, model, created) VALUES (?, ?, ?, ?)",
                (key, value, c.model, time.time()),
            )
        )
        return True

    def _count(self, name: str) -> None:
        self._run(
            lambda c: c.execute(
                "INSERT INTO counters (name, n) VALUES (?, 1)"
                " ON CONFLICT(name) DO UPDATE SET n = n + 1",
                (name,),
            )
        )

    def _counter(self, name: str) -> int:
        row = self._run(
            lambda c: c.execute("SELECT n FROM counters WHERE name = ?", (name,)).fetchone(),
            force=True,
        )
        return int(row[0]) if row else 0

    # -- engine ----------------------------------------------------------------
    def complete(self, request: Request) -> Completion:
        t0 = time.perf_counter()
        hit = self.get(request)
        if hit is not None:
            self.hits += 1
            hit.latency_s = time.perf_counter() - t0
            request.emit(hit.text)  # a streaming caller still sees the reply, in one piece
            return hit
        self.misses += 1
        c = self.inner.complete(request)
        self.put(request, c)
        return c

    async def acomplete(self, request: Request) -> Completion:
        t0 = time.perf_counter()
        hit = await asyncio.to_thread(self.get, request) if self._usable(request) else None
        if hit is not None:
            self.hits += 1
            hit.latency_s = time.perf_counter() - t0
            request.emit(hit.text)
            return hit
        self.misses += 1
        c = await self.inner.acomplete(request)
        if self._usable(request) and self.storable(request, c):
            await asyncio.to_thread(self.put, request, c)
        return c

    # -- maintenance -----------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """What is in the file and how it is used.

        ``hits``/``misses`` count this engine's calls; ``skipped_large`` counts every reply
        any run sharing the file did not store for being over its cap, ``skipped_secret``
        those not stored for holding a secret (both since the last :meth:`clear`);
        ``max_reply_bytes`` is this engine's cap.
        """
        row = self._run(lambda c: c.execute("SELECT count(*) FROM replies").fetchone(), force=True)
        size = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                size += os.path.getsize(str(self.path) + suffix)
            except OSError:
                pass
        return {
            "path": str(self.path),
            "entries": int(row[0]) if row else 0,
            "size_bytes": size,
            "enabled": self.enabled,
            "hits": self.hits,
            "misses": self.misses,
            "max_reply_bytes": self.max_reply_bytes,
            "skipped_large": self._counter("skipped_large"),
            "skipped_secret": self._counter("skipped_secret"),
        }

    def clear(self) -> int:
        """Delete every entry (and the counters); returns how many entries there were."""

        def wipe(c: sqlite3.Connection) -> int:
            n = c.execute("SELECT count(*) FROM replies").fetchone()[0]
            c.execute("DELETE FROM replies")
            c.execute("DELETE FROM counters")
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return int(n)

        return int(self._run(wipe, force=True) or 0)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
