"""Limits: how hard we hit the server, and how we recover when it pushes back.

One wrapper owns concurrency, request/token rates and retries, because they interact: a
retry must wait without holding a concurrency slot, and a rate window must count retries.
The concurrency limit holds across threads *and* asyncio tasks of any event loop, because
a training run mixes both (threaded evaluation, async batches).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import deque
from typing import Any

from .base import (
    Completion,
    ConfigurationError,
    Engine,
    EngineWrapper,
    Request,
    RetryableError,
    completion_limit_of,
    estimate_request_tokens,
    explicit_completion_limit,
)

__all__ = ["DEFAULT_MAX_CONCURRENCY", "AdaptiveLimit", "Limits", "HybridSemaphore", "RateWindow"]

DEFAULT_MAX_CONCURRENCY = 32
"""Default ceiling of calls in flight (the adaptive limit starts there and backs off on
429/503): a minibatch of up to 32 goes out in one wave."""

BACKOFF_STATUS = frozenset({429, 503})
"""Statuses that mean "too many at once": the adaptive limit halves on them."""


class HybridSemaphore:
    """A counting semaphore that threads and coroutines (of any loop) share fairly.

    A freed slot is handed directly to the oldest waiter, so neither side can starve the
    other and an async waiter never blocks an executor thread while it waits. The number
    of slots can change while it is in use (:meth:`set_limit`): lowering it lets the calls
    in flight finish and holds new ones back until fewer than the new limit run.
    """

    def __init__(self, value: int) -> None:
        if value < 1:
            raise ConfigurationError("max_concurrency must be at least 1")
        self._lock = threading.Lock()
        self._limit = int(value)
        self._used = 0
        self._waiters: deque[Any] = deque()

    @property
    def limit(self) -> int:
        return self._limit

    def set_limit(self, value: int) -> None:
        with self._lock:
            self._limit = max(1, int(value))
            self._wake()

    def acquire(self) -> None:
        with self._lock:
            if self._used < self._limit and not self._waiters:
                self._used += 1
                return
            event = threading.Event()
            self._waiters.append(event)
        event.wait()

    async def aacquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._used < self._limit and not self._waiters:
                self._used += 1
                return
            fut: asyncio.Future[None] = loop.create_future()
            waiter = (loop, fut)
            self._waiters.append(waiter)
        try:
            await fut
        except asyncio.CancelledError:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                    raise
            self.release()  # the slot reached us as we were cancelled: pass it on
            raise

    def release(self) -> None:
        with self._lock:
            self._used -= 1
            self._wake()

    def _wake(self) -> None:
        """Hand free slots to the oldest waiters (call with the lock held)."""
        while self._waiters and self._used < self._limit:
            waiter = self._waiters.popleft()
            if isinstance(waiter, threading.Event):
                self._used += 1
                waiter.set()
                continue
            loop, fut = waiter
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # that loop is closed; its waiter is gone
                continue
            self._used += 1


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class RateWindow:
    """A sliding one-minute window of amounts (requests or tokens) with a ceiling.

    ``reserve`` either books ``amount`` now and returns 0, or returns how long to wait
    before asking again. A single amount larger than the ceiling is let through when the
    window is empty, so an oversized request is slow rather than impossible.
    """

    def __init__(self, per_minute: float, period: float = 60.0) -> None:
        self.limit = float(per_minute)
        self.period = period
        self._lock = threading.Lock()
        self._events: deque[list[float]] = deque()  # [timestamp, amount]
        self._total = 0.0

    def _expire(self, now: float) -> None:
        while self._events and self._events[0][0] <= now - self.period:
            self._total -= self._events.popleft()[1]

    def reserve(self, amount: float) -> tuple[float, list[float] | None]:
        with self._lock:
            now = time.monotonic()
            self._expire(now)
            if self._total + amount <= self.limit or not self._events:
                entry = [now, float(amount)]
                self._events.append(entry)
                self._total += amount
                return 0.0, entry
            # wait until enough old amounts leave the window
            need = self._total + amount - self.limit
            freed = 0.0
            for ts, amt in self._events:
                freed += amt
                if freed >= need:
                    return max(0.001, ts + self.period - now), None
            return max(0.001, self._events[-1][0] + self.period - now), None

    def settle(self, entry: list[float] | None, amount: float) -> None:
        """Replace a booked estimate with the real amount."""
        if entry is None:
            return
        with self._lock:
            if any(e is entry for e in self._events):
                self._total += amount - entry[1]
                entry[1] = float(amount)


class AdaptiveLimit:
    """How many calls may be in flight: additive increase, multiplicative decrease (AIMD).

    Starts at ``start`` (default: the ceiling). A 429 or 503 halves it -- once per wave:
    refusals of calls that were already in flight when it was last halved do not halve it
    again. Every ``limit`` successes in a row raise it by one, up to ``ceiling`` (the
    user's ``max_concurrency`` / ``--concurrency``), so it grows back while the server
    keeps up. The semaphore it drives is changed in place; calls in flight are never cut.
    """

    def __init__(self, sem: HybridSemaphore, ceiling: int, start: int | None = None) -> None:
        if ceiling < 1:
            raise ConfigurationError("max_concurrency must be at least 1")
        if start is not None and not 1 <= start <= ceiling:
            raise ConfigurationError(
                f"start_concurrency must be between 1 and max_concurrency ({ceiling}), "
                f"got {start}")
        self.ceiling = int(ceiling)
        self._sem = sem
        self._lock = threading.Lock()
        self._epoch = 0  # bumped at every cut; a call remembers the epoch it started in
        self._successes = 0
        self.cuts = 0  # times the limit was halved, for reports
        sem.set_limit(start or self.ceiling)

    @property
    def value(self) -> int:
        return self._sem.limit

    def started(self) -> int:
        """The epoch a call starts in (pass it to :meth:`refused`)."""
        return self._epoch

    def succeeded(self) -> None:
        with self._lock:
            self._successes += 1
            limit = self._sem.limit
            if self._successes >= limit and limit < self.ceiling:
                self._successes = 0
                self._sem.set_limit(limit + 1)

    def refused(self, epoch: int, status: int | None) -> None:
        """A call that started in ``epoch`` was refused with ``status``."""
        if status not in BACKOFF_STATUS:
            return
        with self._lock:
            self._successes = 0
            if epoch != self._epoch:
                return  # this wave already halved the limit
            self._epoch += 1
            self.cuts += 1
            self._sem.set_limit(max(1, self._sem.limit // 2))


class Limits(EngineWrapper):
    """Bound concurrency and rates; retry :class:`RetryableError` with backoff and jitter.

    Backoff before retry ``n`` (0-based) is ``backoff_base * 2**n``, scaled by a random
    factor in [0.5, 1.5) and capped at ``backoff_max``; a server's Retry-After wins, up to
    ``max_retry_after`` seconds. Slots are released while waiting to retry.

    ``max_concurrency`` is a ceiling: the number of calls in flight adapts below it
    (:class:`AdaptiveLimit`), starting at ``start_concurrency`` (default: the ceiling),
    halving on 429/503 and growing back by one per window of successes.
    """

    def __init__(
        self,
        inner: Engine,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        *,
        start_concurrency: int | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_retry_after: float = 120.0,
    ) -> None:
        super().__init__(inner)
        if max_retries < 0:
            raise ConfigurationError("max_retries must be >= 0")
        self._max_concurrency = int(max_concurrency)
        self._sem = HybridSemaphore(self._max_concurrency)
        self.adaptive = AdaptiveLimit(self._sem, self._max_concurrency, start_concurrency)
        self.rpm = RateWindow(rpm) if rpm else None
        self.tpm = RateWindow(tpm) if tpm else None
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self._stats_lock = threading.Lock()
        self.retries = 0  # retried attempts so far, for reports

    @property
    def max_concurrency(self) -> int:  # type: ignore[override]
        """The ceiling (what thread pools are sized for)."""
        return self._max_concurrency

    @property
    def concurrency(self) -> int:
        """Calls allowed in flight right now (adapts below the ceiling)."""
        return self.adaptive.value

    # -- policy --------------------------------------------------------------
    def delay(self, attempt: int, error: RetryableError) -> float:
        if error.retry_after is not None:
            return min(max(0.0, error.retry_after), self.max_retry_after)
        base = self.backoff_base * (2**attempt) * (0.5 + random.random())
        return min(base, self.backoff_max)

    def _tokens(self, request: Request) -> int:
        """Tokens to book in the tokens-per-minute window: prompt plus the reply limit sent."""
        max_out = completion_limit_of(self.inner, request)
        if max_out is None:
            max_out = explicit_completion_limit(request.params)
        return estimate_request_tokens(request) + int(max_out or 0)

    def _book(self, request: Request) -> tuple[float, list[float] | None]:
        """Book this call in the rate windows: (0, token entry), or (seconds to wait, None)."""
        req_entry = tok_entry = None
        if self.rpm is not None:
            wait, req_entry = self.rpm.reserve(1)
            if wait:
                return wait, None
        if self.tpm is not None:
            wait, tok_entry = self.tpm.reserve(self._tokens(request))
            if wait:
                if self.rpm is not None:
                    self.rpm.settle(req_entry, 0)  # not sent after all
                return wait, None
        return 0.0, tok_entry

    def _settle(self, entry: list[float] | None, c: Completion | None) -> None:
        if self.tpm is not None and c is not None:
            self.tpm.settle(entry, c.usage.total_tokens)

    def _count_retry(self) -> None:
        with self._stats_lock:
            self.retries += 1

    # -- sync ------------------------------------------------------------------
    def complete(self, request: Request) -> Completion:
        attempt = 0
        while True:
            self._sem.acquire()
            try:
                while True:
                    wait, tok = self._book(request)
                    if not wait:
                        break
                    time.sleep(wait)
                epoch = self.adaptive.started()
                try:
                    c = self.inner.complete(request)
                except RetryableError as e:
                    error = e
                    self.adaptive.refused(epoch, e.status)
                else:
                    self._settle(tok, c)
                    self.adaptive.succeeded()
                    return c
            finally:
                self._sem.release()
            if attempt >= self.max_retries:
                raise error.gave_up(attempt + 1) from error
            time.sleep(self.delay(attempt, error))
            attempt += 1
            self._count_retry()

    # -- async -----------------------------------------------------------------
    async def acomplete(self, request: Request) -> Completion:
        attempt = 0
        while True:
            await self._sem.aacquire()
            try:
                while True:
                    wait, tok = self._book(request)
                    if not wait:
                        break
                    await asyncio.sleep(wait)
                epoch = self.adaptive.started()
                try:
                    c = await self.inner.acomplete(request)
                except RetryableError as e:
                    error = e
                    self.adaptive.refused(epoch, e.status)
                else:
                    self._settle(tok, c)
                    self.adaptive.succeeded()
                    return c
            finally:
                self._sem.release()
            if attempt >= self.max_retries:
                raise error.gave_up(attempt + 1) from error
            await asyncio.sleep(self.delay(attempt, error))
            attempt += 1
            self._count_retry()
