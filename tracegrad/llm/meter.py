"""Meter: what a run has spent, by purpose and by model, and the budget that stops it.

A budget is only useful if it stops the call that *would* overspend, before it is sent.
So each call first reserves its worst case (estimated prompt tokens plus ``max_tokens``,
or a default worst case), concurrent calls see each other's reservations, and after the
call the reservation is replaced by the real usage. Cache hits cost nothing and are let
through even when the budget is spent.

Several engines (the forward model, the optimizer model, a judge) can share one ledger --
``Meter(engine, share=other_meter)`` -- so a single budget covers the whole run.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any

from .base import (
    PURPOSES,
    Completion,
    Engine,
    EngineWrapper,
    LLMError,
    Request,
    Usage,
    estimate_request_tokens,
)
from .pricing import price_for

__all__ = ["Meter", "Budget", "BudgetExceeded", "Tally"]

DEFAULT_WORST_CASE_COMPLETION_TOKENS = 1024


@dataclass
class Budget:
    """Spending limits; ``None`` means unlimited. Cache hits never count."""

    usd: float | None = None
    tokens: int | None = None
    calls: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class BudgetExceeded(LLMError):
    """The next call could exceed the budget, so it was not sent."""

    def __init__(self, message: str, *, kind: str, limit: float, used: float, needed: float):
        super().__init__(message)
        self.kind = kind
        self.limit = limit
        self.used = used
        self.needed = needed


@dataclass
class Tally:
    calls: int = 0
    cached_calls: int = 0
    errors: int = 0
    estimated_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["total_tokens"] = self.total_tokens
        d["usd"] = round(self.usd, 10)
        return d


def _tally_delta(now: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    before = before or {}
    out: dict[str, Any] = {}
    for k, v in now.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        out[k] = v - before.get(k, 0)
        if isinstance(v, float):
            out[k] = round(out[k], 10)
    return out


class _Ledger:
    def __init__(self, budget: Budget | None) -> None:
        self.lock = threading.Lock()
        self.budget = budget
        self.total = Tally()
        self.by_purpose: dict[str, Tally] = {p: Tally() for p in PURPOSES}
        self.by_model: dict[str, Tally] = {}
        self.reserved = [0, 0, 0.0]  # calls, tokens, usd
        self.unpriced: set[str] = set()
        self.warned_unpriced: set[str] = set()

    def tallies(self, purpose: str, model: str) -> list[Tally]:
        p = purpose if purpose in self.by_purpose else "other"
        return [self.total, self.by_purpose[p], self.by_model.setdefault(model, Tally())]


@dataclass
class _Reservation:
    calls: int
    tokens: int
    usd: float


class Meter(EngineWrapper):
    """Count calls, tokens and dollars; enforce an optional :class:`Budget`.

    ``worst_case_completion_tokens`` is the completion length assumed for a call that sets
    no ``max_tokens``; lower it to let a dollar budget run closer to its limit, raise it to
    be more conservative.
    """

    def __init__(
        self,
        inner: Engine,
        budget: Budget | None = None,
        *,
        worst_case_completion_tokens: int = DEFAULT_WORST_CASE_COMPLETION_TOKENS,
        share: Meter | None = None,
    ) -> None:
        super().__init__(inner)
        self._ledger = share._ledger if share is not None else _Ledger(budget)
        if share is not None and budget is not None:
            self._ledger.budget = budget
        self.worst_case_completion_tokens = worst_case_completion_tokens

    def wrap(self, engine: Engine) -> Meter:
        """Meter another engine into this same ledger and budget."""
        return Meter(
            engine, share=self, worst_case_completion_tokens=self.worst_case_completion_tokens
        )

    # -- budget ------------------------------------------------------------------
    @property
    def budget(self) -> Budget | None:
        return self._ledger.budget

    @budget.setter
    def budget(self, value: Budget | None) -> None:
        with self._ledger.lock:
            self._ledger.budget = value

    def _max_completion(self, request: Request) -> int:
        for source in (request.params, self._engine_params()):
            for name in ("max_completion_tokens", "max_tokens"):
                v = source.get(name)
                if v:
                    return int(v)
        return self.worst_case_completion_tokens

    def _engine_params(self) -> dict[str, Any]:
        e: Any = self.inner
        while e is not None:
            p = getattr(e, "params", None)
            if isinstance(p, dict):
                return p
            e = getattr(e, "inner", None)
        return {}

    def worst_case(self, request: Request) -> tuple[int, float]:
        """(tokens, usd) this call could cost at most, as far as we can tell before sending."""
        prompt = estimate_request_tokens(request)
        out = self._max_completion(request)
        model = request.model or self.model
        return prompt + out, price_for(model).cost(Usage(prompt, out))

    def _reserve(self, request: Request) -> _Reservation | BudgetExceeded:
        led = self._ledger
        tokens, usd = self.worst_case(request)
        model = request.model or self.model
        with led.lock:
            b = led.budget
            r = _Reservation(1, tokens, usd)
            if b is None:
                return _Reservation(0, 0, 0.0)
            t = led.total
            checks = (
                ("calls", b.calls, t.calls + led.reserved[0], 1),
                ("tokens", b.tokens, t.total_tokens + led.reserved[1], tokens),
                ("usd", b.usd, t.usd + led.reserved[2], usd),
            )
            for kind, limit, used, needed in checks:
                if limit is not None and used + needed > limit + 1e-12:
                    unit = {"calls": "calls", "tokens": "tokens", "usd": "USD"}[kind]
                    return BudgetExceeded(
                        f"budget exceeded: {kind} limit {limit:g} {unit}, {used:g} used or "
                        f"reserved, and this {request.purpose} call to {model} could need "
                        f"{needed:g} more. The call was not sent; raise the Budget to continue.",
                        kind=kind,
                        limit=float(limit),
                        used=float(used),
                        needed=float(needed),
                    )
            led.reserved[0] += r.calls
            led.reserved[1] += r.tokens
            led.reserved[2] += r.usd
            if b.usd is not None and not price_for(model).known:
                self._warn_unpriced(model)
        return r

    def _warn_unpriced(self, model: str) -> None:
        led = self._ledger
        if model not in led.warned_unpriced:
            led.warned_unpriced.add(model)
            warnings.warn(
                f"no price known for model {model!r}: a dollar budget cannot limit its calls "
                "(use tracegrad.llm.set_pricing or $TRACEGRAD_PRICING)",
                stacklevel=4,
            )

    def _cache_would_answer(self, request: Request) -> bool:
        from .cache import Cache

        e: Any = self.inner
        while e is not None:
            if isinstance(e, Cache):
                return e.contains(request)
            e = getattr(e, "inner", None)
        return False

    def _begin(self, request: Request) -> _Reservation:
        r = self._reserve(request)
        if isinstance(r, BudgetExceeded):
            if self._cache_would_answer(request):
                return _Reservation(0, 0, 0.0)
            raise r
        return r

    def _release(self, r: _Reservation) -> None:
        led = self._ledger
        led.reserved[0] -= r.calls
        led.reserved[1] -= r.tokens
        led.reserved[2] -= r.usd

    def _settle(
        self, request: Request, r: _Reservation, c: Completion | None, error: bool = False
    ) -> None:
        led = self._ledger
        model = request.model or self.model
        usd, unpriced = 0.0, False
        if c is not None and not c.cached:
            price = price_for(c.model)
            if not price.known:
                price = price_for(model)
            usd, unpriced = price.cost(c.usage), not price.known
        with led.lock:
            self._release(r)
            for t in led.tallies(request.purpose, model):
                if error or c is None:
                    t.errors += 1
                elif c.cached:
                    t.cached_calls += 1
                else:
                    t.calls += 1
                    t.prompt_tokens += c.usage.prompt_tokens
                    t.completion_tokens += c.usage.completion_tokens
                    t.usd += usd
                    t.estimated_calls += int(c.usage.estimated)
            if unpriced:
                led.unpriced.add(model)

    # -- engine ------------------------------------------------------------------
    def complete(self, request: Request) -> Completion:
        r = self._begin(request)
        try:
            c = self.inner.complete(request)
        except BaseException:
            self._settle(request, r, None, error=True)
            raise
        self._settle(request, r, c)
        return c

    async def acomplete(self, request: Request) -> Completion:
        r = self._begin(request)
        try:
            c = await self.inner.acomplete(request)
        except BaseException:
            self._settle(request, r, None, error=True)
            raise
        self._settle(request, r, c)
        return c

    # -- reporting ---------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Totals so far as plain JSON-able data."""
        led = self._ledger
        with led.lock:
            b = led.budget
            t = led.total
            remaining = None
            if b is not None:
                remaining = {
                    "usd": None if b.usd is None else round(b.usd - t.usd, 10),
                    "tokens": None if b.tokens is None else b.tokens - t.total_tokens,
                    "calls": None if b.calls is None else b.calls - t.calls,
                }
            return {
                "total": t.to_dict(),
                "by_purpose": {p: x.to_dict() for p, x in led.by_purpose.items()},
                "by_model": {m: x.to_dict() for m, x in led.by_model.items()},
                "budget": b.to_dict() if b is not None else None,
                "remaining": remaining,
                "unpriced_models": sorted(led.unpriced),
            }

    def since(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        """Usage between ``snapshot`` (an earlier :meth:`snapshot`) and now, e.g. per step."""
        now = self.snapshot()
        return {
            "total": _tally_delta(now["total"], snapshot.get("total")),
            "by_purpose": {
                p: _tally_delta(v, snapshot.get("by_purpose", {}).get(p))
                for p, v in now["by_purpose"].items()
            },
            "by_model": {
                m: _tally_delta(v, snapshot.get("by_model", {}).get(m))
                for m, v in now["by_model"].items()
            },
        }

    def reset(self) -> None:
        """Zero the totals (the budget stays)."""
        led = self._ledger
        with led.lock:
            led.total = Tally()
            led.by_purpose = {p: Tally() for p in PURPOSES}
            led.by_model = {}
            led.unpriced = set()

    @property
    def total(self) -> Tally:
        with self._ledger.lock:
            return Tally(**{f.name: getattr(self._ledger.total, f.name) for f in fields(Tally)})

    @property
    def usd(self) -> float:
        return self.total.usd

    @property
    def calls(self) -> int:
        return self.total.calls
