"""Bulk evaluations through a provider's Batch API, for any pipeline, resumable.

A pipeline is ordinary Python: its requests are only known by running it, and a chain's
second request only once the first is answered. So a batched evaluation runs in rounds.
Inside a :class:`BatchScope` (a context variable, so every example's worker thread sees
it) the :class:`BatchRouter` layer of each OpenAI-compatible engine answers a request
from the batch results it has, or records it and raises :class:`~.base.Deferred`, which
ends that example's run for this round. The round's recorded requests go out as batches
(:mod:`.batchclient`); the next round runs the deferred examples again and gets further.
An example whose run deferred nothing is final. A one-call prompt takes two rounds.

The router sits below the cache, so cached requests are answered there and never
batched, and batch answers are stored in the cache on their way up; it sits above the
rate limiter, so collecting requests neither waits for nor uses up any limit. Requests
that failed in a batch are retried in a new batch or live (bounded, counted in the
report); after ``max_rounds`` rounds the rest runs live, so a pipeline whose requests
never repeat (a timestamp in the prompt) still finishes.
"""

from __future__ import annotations

import contextvars
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .base import Completion, Deferred, Engine, EngineWrapper, Request
from .batchjournal import BatchJournal
from .cache import engine_fingerprint, request_key

__all__ = ["BatchOptions", "BatchRouter", "BatchScope", "run_batched", "batch_capable"]

T = TypeVar("T")
R = TypeVar("R")

_SCOPE: contextvars.ContextVar[BatchScope | None] = contextvars.ContextVar(
    "tracegrad_batch_scope", default=None)
_EXAMPLE: contextvars.ContextVar[_Flag | None] = contextvars.ContextVar(
    "tracegrad_batch_example", default=None)


@dataclass
class BatchOptions:
    """How batched evaluations are submitted and waited for.

    ``run_dir``: where the journal of batch and file ids lives (None: in memory, nothing
    to resume). ``poll_interval`` grows by half each poll up to ``max_poll_interval``;
    ``max_wait`` (seconds, None: the provider's window) bounds the wait for one round.
    A part holds at most ``max_lines`` lines and ``max_bytes`` bytes (OpenAI: 50,000 and
    200 MB); more is split. Lines that fail go to a new batch while there are more than
    ``live_retry_max`` of them and a line has had fewer than ``retries`` re-submissions,
    otherwise they are retried live. ``on_progress`` receives one-line status messages.
    """

    run_dir: str | Path | None = None
    poll_interval: float = 5.0
    max_poll_interval: float = 60.0
    max_wait: float | None = None
    max_lines: int = 50_000
    max_bytes: int = 190_000_000
    retries: int = 1
    live_retry_max: int = 100
    max_rounds: int = 8
    completion_window: str = "24h"
    on_progress: Callable[[str], None] | None = None

    def say(self, message: str) -> None:
        if self.on_progress is not None:
            self.on_progress(message)


class _Flag:
    """Set on an example's context: did its run defer a request this round?"""

    deferred = False


def batch_capable(engine: Any) -> bool:
    """Whether some layer of ``engine`` can route its requests into a provider batch."""
    e = engine
    while e is not None:
        if isinstance(e, BatchRouter):
            return True
        e = getattr(e, "inner", None)
    return False


class BatchRouter(EngineWrapper):
    """Answers from a batch while a :class:`BatchScope` is active; a pass-through otherwise.

    Needs an engine below that speaks the Batch API (``batch_body``/``batch_completion``,
    as :class:`~tracegrad.llm.openai.OpenAIEngine` does).
    """

    def __init__(self, inner: Engine) -> None:
        super().__init__(inner)
        self.provider = _provider(inner)

    def key(self, request: Request) -> str:
        return request_key(request, engine_fingerprint(self.inner))

    def complete(self, request: Request) -> Completion:
        scope = _SCOPE.get()
        c = scope.route(self, request) if scope is not None else None
        return c if c is not None else self.inner.complete(request)

    async def acomplete(self, request: Request) -> Completion:
        scope = _SCOPE.get()
        c = scope.route(self, request) if scope is not None else None
        return c if c is not None else await self.inner.acomplete(request)


def _provider(engine: Any) -> Any:
    e = engine
    while e is not None:
        if callable(getattr(e, "batch_body", None)):
            return e
        e = getattr(e, "inner", None)
    raise TypeError(f"{engine!r} has no engine that speaks the Batch API below it")


class BatchScope:
    """The state of one batched evaluation: answers, requests waiting, failures, report."""

    def __init__(self, options: BatchOptions, journal: BatchJournal | None = None) -> None:
        self.options = options
        self.journal = journal if journal is not None else BatchJournal(options.run_dir)
        self._lock = threading.Lock()
        self.answers: dict[str, Any] = {}  # request key -> chat completion body
        self.pending: dict[str, tuple[BatchRouter, Request]] = {}
        self.meters: dict[str, Any] = {}  # request key -> the meter above its router
        self.live: set[str] = set()
        self.resubmits: Counter[str] = Counter()
        self.seen_parts: set[str] = set()  # parts downloaded by this process
        self.all_live = False
        self.report: Counter[str] = Counter()

    # -- called by the router, on the examples' threads ----------------------------
    def route(self, router: BatchRouter, request: Request) -> Completion | None:
        """The batch's answer, None to call live, or :class:`Deferred` raised."""
        key = router.key(request)
        with self._lock:
            body = self.answers.get(key)
            live = self.all_live or key in self.live
            if body is None and not live:
                self.pending.setdefault(key, (router, request))
        if body is not None:
            return router.provider.batch_completion(body, request)
        if live:
            with self._lock:
                self.report["live_calls"] += 1
            return None
        flag = _EXAMPLE.get()
        if flag is not None:
            flag.deferred = True
        d = Deferred(key)
        d.scope = self
        raise d

    def bind_meter(self, key: str, meter: Any) -> None:
        """Remember the meter that saw a deferred request: it reserves the batch's cost."""
        with self._lock:
            self.meters.setdefault(key, meter)

    # -- rounds --------------------------------------------------------------------
    def run_round(self, items: Sequence[T], fn: Callable[[T], R],
                  mapper: Callable[[Callable[[T], Any], Sequence[T]], list[Any]]
                  ) -> list[tuple[R | None, bool]]:
        """``fn`` over ``items`` (through ``mapper``) with this scope active."""

        def one(item: T) -> tuple[R | None, bool]:
            flag = _Flag()
            _EXAMPLE.set(flag)
            try:
                out: R | None = fn(item)
            except Deferred:
                out = None
            return out, flag.deferred

        token = _SCOPE.set(self)
        try:
            return mapper(one, items)
        finally:
            _SCOPE.reset(token)

    def flush(self) -> None:
        """Send what the last round deferred; collect answers; route failures."""
        from .batchclient import BatchClient

        with self._lock:
            pending, self.pending = self.pending, {}
        # a provider batch holds one model: one group per engine and model
        groups: dict[tuple[int, str], tuple[BatchRouter, dict[str, Request]]] = {}
        for key, (router, request) in pending.items():
            model = str(request.model or router.provider.model)
            groups.setdefault((id(router), model), (router, {}))[1][key] = request
        for (_, model), (router, requests) in groups.items():
            meters = {k: self.meters.get(k) for k in requests}
            client = BatchClient(router.provider, self, model)
            answers, failed = client.resolve(requests, meters)
            with self._lock:
                self.answers.update(answers)
            self._route_failures(failed)

    def _route_failures(self, failed: dict[str, str]) -> None:
        if not failed:
            return
        o = self.options
        self.report["failed_lines"] += len(failed)
        rebatch = len(failed) > o.live_retry_max
        for key in failed:
            if rebatch and self.resubmits[key] < o.retries:
                self.resubmits[key] += 1
                self.report["retried_in_batch"] += 1
            else:
                self.live.add(key)
                self.report["retried_live"] += 1
        first = next(iter(failed.values()))
        o.say(f"batch: {len(failed)} lines failed (first: {first}); "
              f"{'a new batch' if rebatch else 'retrying them live'}")


def run_batched(items: Sequence[T], fn: Callable[[T], R],
                mapper: Callable[[Callable[[T], Any], Sequence[T]], list[Any]],
                options: BatchOptions, journal: BatchJournal | None = None
                ) -> tuple[list[R], dict[str, Any]]:
    """``[fn(item) for item in items]`` with every request it makes sent in provider
    batches; returns the results and a report (batches, lines, failures, retries)."""
    scope = BatchScope(options, journal)
    results: list[Any] = [None] * len(items)
    todo = list(range(len(items)))
    for n in range(options.max_rounds + 1):
        if n == options.max_rounds:
            scope.all_live = True
            options.say(f"batch: still waiting after {n} rounds; the rest runs live")
        outs = scope.run_round([items[i] for i in todo], fn, mapper)
        still = []
        for i, (out, deferred) in zip(todo, outs, strict=True):
            if deferred:
                still.append(i)
            else:
                results[i] = out
        todo = still
        if not todo:
            break
        scope.report["rounds"] += 1
        scope.flush()
    report = dict(scope.report)
    if not report.get("lines") and not report.get("resumed_parts"):
        report["note"] = ("no request went to a Batch-API engine (a cache answered every "
                          "one, or the engines are not OpenAI-compatible): ran live")
    return results, report
