"""Meter: what a run has spent, by purpose and by model, and the budget that stops it.

A budget is only useful if it stops the call that *would* overspend, before it is sent.
So each call first reserves its worst case -- estimated prompt tokens plus the reply-token
limit the engine sends with it, the same number -- concurrent calls see each other's
reservations, and after the call the reservation is replaced by the real usage. A server
that reports more than it was allowed is caught here (:class:`UsageOverrun`). Cache hits
cost nothing and are let through even when the budget is spent.

Several engines (the forward model, the optimizer model, a judge) can share one ledger --
``Meter(engine, share=other_meter)`` -- so a single budget covers the whole run.
"""

from __future__ import annotations

import json
import threading
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any

from .base import (
    PURPOSES,
    Completion,
    Deferred,
    Engine,
    EngineWrapper,
    LLMError,
    Request,
    Usage,
    completion_limit_of,
    content_to_text,
    estimate_request_tokens,
    explicit_completion_limit,
)
from .pricing import price_for

__all__ = ["Meter", "Budget", "BudgetExceeded", "UsageOverrun", "Tally"]

DEFAULT_WORST_CASE_COMPLETION_TOKENS = 1024
MAX_OVERRUNS_KEPT = 20
IMAGE_TOKEN_CEILING = 50_000  # a high-detail image on gpt-4o-mini bills about 48,000


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


class UsageOverrun(BudgetExceeded):
    """The server reported more tokens than the call was sent with (and reserved).

    A subclass of BudgetExceeded: a run treats it as a clean, resumable stop. ``record``
    is what ``Meter.snapshot()["overruns"]`` keeps of it.
    """

    def __init__(self, message: str, *, record: dict[str, Any]) -> None:
        super().__init__(
            message,
            kind="overrun",
            limit=float(record["reserved_tokens"]),
            used=float(record["reported_tokens"]),
            needed=0.0,
        )
        self.record = record


@dataclass
class Tally:
    calls: int = 0
    cached_calls: int = 0
    errors: int = 0
    estimated_calls: int = 0
    overruns: int = 0  # replies whose reported usage exceeded what was reserved
    cut_replies: int = 0  # finish_reason "length" or "content_filter": not a whole answer
    empty_replies: int = 0  # no text and no parsed value
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


def prompt_token_ceiling(request: Request) -> int:
    """More prompt tokens than any tokenizer can make of this request.

    Byte-level BPE never makes more than one token per UTF-8 byte; messages add a few
    tokens of framing, a schema is sent as well, and an image bills at most
    IMAGE_TOKEN_CEILING. A server reporting more is not counting what it was sent.
    """
    total = 1024
    for m in request.messages:
        content = m.get("content")
        total += 16 + len(content_to_text(content).encode("utf-8"))
        if isinstance(content, list):
            total += IMAGE_TOKEN_CEILING * sum(
                isinstance(p, dict) and p.get("type") == "image_url" for p in content
            )
        if m.get("tool_calls"):
            total += len(json.dumps(m["tool_calls"], default=str).encode("utf-8"))
    if request.response_format is not None:
        total += len(str(request.response_format.model_json_schema()).encode("utf-8"))
    if request.tools:
        total += len(json.dumps(request.tools, default=str).encode("utf-8"))
    return total


def _countable_usage(
    request: Request, r: _Reservation, c: Completion, model: str
) -> tuple[Usage, UsageOverrun | None]:
    """The usage to book for reply ``c``, and the overrun it shows, if any.

    Reply tokens are booked at most at the limit that was sent: a server told the limit
    cannot bill more, and a report above it is a server bug or a lie, kept as evidence in
    the overrun record. Estimated usage (the server reported none) is capped the same way
    without being called an overrun: the estimate is ours, not the server's claim.
    """
    u = c.usage
    completion = min(u.completion_tokens, r.completion)
    if u.estimated:
        return Usage(u.prompt_tokens, completion, estimated=True), None
    ceiling = prompt_token_ceiling(request)
    over_out = u.completion_tokens > r.completion
    over_in = u.prompt_tokens > ceiling
    if not (over_out or over_in):
        return u, None
    prompt = r.prompt if over_in else u.prompt_tokens
    record = {
        "model": model,
        "purpose": request.purpose,
        "reserved_completion_tokens": r.completion,
        "reported_completion_tokens": u.completion_tokens,
        "prompt_token_ceiling": ceiling,
        "reported_prompt_tokens": u.prompt_tokens,
        "reserved_tokens": r.tokens,
        "reported_tokens": u.total_tokens,
    }
    what = (
        f"{u.completion_tokens:,} reply tokens where the call was sent with a limit of "
        f"{r.completion:,} (the amount reserved)"
        if over_out
        else f"{u.prompt_tokens:,} prompt tokens for a request that cannot exceed {ceiling:,}"
    )
    msg = (
        f"usage overrun: the server for {model} reported {what} on a {request.purpose} call; "
        f"it ignores the limit or misreports usage. Counted as {prompt:,} + {completion:,} "
        "tokens."
    )
    return Usage(prompt, completion), UsageOverrun(msg, record=record)


def _stopping(overrun: UsageOverrun) -> UsageOverrun:
    """The overrun as raised when a budget is at stake: it says what happened to the reply."""
    msg = (
        f"{overrun} A budget cannot hold against such a server, so the reply was discarded "
        "and the run stops here."
    )
    return UsageOverrun(msg, record=overrun.record)


def _count(
    t: Tally, c: Completion | None, usage: Usage, usd: float, error: bool, overrun: bool
) -> None:
    """Add one settled call to tally ``t``."""
    if error or c is None:
        t.errors += 1
    elif c.cached:
        t.cached_calls += 1
    else:
        t.calls += 1
        t.prompt_tokens += usage.prompt_tokens
        t.completion_tokens += usage.completion_tokens
        t.usd += usd
        t.estimated_calls += int(usage.estimated)
        t.overruns += int(overrun)
        t.cut_replies += int(c.problem in ("length", "content_filter"))
        t.empty_replies += int(c.problem == "empty")


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
        self.overruns: list[dict[str, Any]] = []  # the latest MAX_OVERRUNS_KEPT
        self.warned_overrun: set[str] = set()

    def tallies(self, purpose: str, model: str) -> list[Tally]:
        p = purpose if purpose in self.by_purpose else "other"
        return [self.total, self.by_purpose[p], self.by_model.setdefault(model, Tally())]

    def guards_spend(self, priced: bool) -> bool:
        """A budget limits tokens, or dollars of a priced model: usage beyond a reservation
        would overspend it."""
        b = self.budget
        return b is not None and (b.tokens is not None or (b.usd is not None and priced))


@dataclass
class _Reservation:
    """What one call may cost at most: booked in the ledger (``booked``) while it runs."""

    prompt: int  # estimated prompt tokens
    completion: int  # the reply-token limit the engine sends
    usd: float
    booked: bool = False
    calls: int = 1  # a batch's reservation covers all its calls

    @property
    def tokens(self) -> int:
        return self.prompt + self.completion


class Meter(EngineWrapper):
    """Count calls, tokens and dollars; enforce an optional :class:`Budget`.

    Each call reserves its prompt (estimated) plus the reply-token limit the engine below
    will send with it (``engine.completion_limit(request)``, which OpenAIEngine always
    sends). ``worst_case_completion_tokens`` is the limit assumed for an engine that
    sends none of its own and a request that sets no ``max_tokens``.

    A server that reports more reply tokens than the limit it was sent (or more prompt
    tokens than the request could hold) broke the contract the budget relies on: the
    call is counted at the limit, recorded in ``snapshot()["overruns"]``, and -- when a
    budget limits dollars or tokens -- :class:`UsageOverrun` stops the run.
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

    def completion_limit(self, request: Request) -> int:
        """The reply-token limit reserved for ``request``: the one the engine sends."""
        sent = completion_limit_of(self.inner, request)
        if sent is not None:
            return sent
        for source in (request.params, self._engine_params()):
            explicit = explicit_completion_limit(source)
            if explicit is not None:
                return explicit
        return self.worst_case_completion_tokens

    def _engine_params(self) -> dict[str, Any]:
        e: Any = self.inner
        while e is not None:
            p = getattr(e, "params", None)
            if isinstance(p, dict):
                return p
            e = getattr(e, "inner", None)
        return {}

    def _reservation(self, request: Request, batch: bool = False) -> _Reservation:
        prompt = estimate_request_tokens(request)
        out = self.completion_limit(request)
        model = request.model or self.model
        return _Reservation(prompt, out, price_for(model).cost(Usage(prompt, out), batch=batch))

    def worst_case(self, request: Request) -> tuple[int, float]:
        """(tokens, usd) this call could cost at most, as far as we can tell before sending."""
        r = self._reservation(request)
        return r.tokens, r.usd

    def _reserve(self, request: Request) -> tuple[_Reservation, BudgetExceeded | None]:
        """This call's reservation, booked if the budget has room; else why it has none."""
        r = self._reservation(request)
        return r, self._book_if_room(r, request.model or self.model, f"this {request.purpose} call")

    def _book_if_room(self, r: _Reservation, model: str, what: str) -> BudgetExceeded | None:
        """Book ``r`` if the budget has room for it; else why not (nothing booked)."""
        led = self._ledger
        with led.lock:
            b = led.budget
            if b is None:
                return None
            t = led.total
            checks = (
                ("calls", b.calls, t.calls + led.reserved[0], r.calls),
                ("tokens", b.tokens, t.total_tokens + led.reserved[1], r.tokens),
                ("usd", b.usd, t.usd + led.reserved[2], r.usd),
            )
            for kind, limit, used, needed in checks:
                if limit is not None and used + needed > limit + 1e-12:
                    unit = {"calls": "calls", "tokens": "tokens", "usd": "USD"}[kind]
                    return BudgetExceeded(
                        f"budget exceeded: {kind} limit {limit:g} {unit}, {used:g} used or "
                        f"reserved, and {what} to {model} could need "
                        f"{needed:g} more. The call was not sent; raise the Budget to continue.",
                        kind=kind,
                        limit=float(limit),
                        used=float(used),
                        needed=float(needed),
                    )
            self._book(r, +1)
            if b.usd is not None and not price_for(model).known:
                self._warn_unpriced(model)
        return None

    def reserve_batch(self, requests: list[Request]) -> _Reservation:
        """Reserve the worst case of a whole provider batch, at batch prices, before it is
        submitted: a batch cannot be stopped half way the way a loop of calls can."""
        parts = [self._reservation(r, batch=True) for r in requests]
        total = _Reservation(sum(p.prompt for p in parts), sum(p.completion for p in parts),
                             sum(p.usd for p in parts), calls=len(parts))
        model = (requests[0].model if requests else None) or self.model
        refused = self._book_if_room(total, model, f"a batch of {len(parts)} calls")
        if refused is not None:
            raise refused
        return total

    def release_batch(self, r: _Reservation) -> None:
        """Give back a batch's reservation (its calls are then settled one by one)."""
        with self._ledger.lock:
            if r.booked:
                self._book(r, -1)

    def _book(self, r: _Reservation, sign: int) -> None:
        """Add (+1) or remove (-1) a reservation; call with the ledger's lock held."""
        led = self._ledger
        led.reserved[0] += sign * r.calls
        led.reserved[1] += sign * r.tokens
        led.reserved[2] += sign * r.usd
        r.booked = sign > 0

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
        r, refused = self._reserve(request)
        if refused is not None and not self._cache_would_answer(request):
            raise refused
        return r  # unbooked when refused: a cache hit is free

    def _settle(
        self, request: Request, r: _Reservation, c: Completion | None, error: bool = False
    ) -> UsageOverrun | None:
        """Replace the reservation by what the call used; the overrun to raise, if any."""
        led = self._ledger
        model = request.model or self.model
        usage, overrun = Usage(), None
        if c is not None and not c.cached:
            usage, overrun = _countable_usage(request, r, c, model)
        price = price_for(model)
        if not price.known and c is not None:
            price = price_for(c.model)
        usd = price.cost(usage, batch=c is not None and c.batch)
        with led.lock:
            if r.booked:
                self._book(r, -1)
            for t in led.tallies(request.purpose, model):
                _count(t, c, usage, usd, error, overrun is not None)
            if c is not None and not c.cached and not price.known:
                led.unpriced.add(model)
            if overrun is not None:
                led.overruns = [*led.overruns, overrun.record][-MAX_OVERRUNS_KEPT:]
            guarded = led.guards_spend(price.known)
            first = overrun is not None and model not in led.warned_overrun
            if first and not guarded:
                led.warned_overrun.add(model)
        if overrun is None:
            return None
        if not guarded:
            if first:  # once per model: the record and the tally keep count
                warnings.warn(str(overrun), stacklevel=4)
            return None
        return _stopping(overrun)

    # -- engine ------------------------------------------------------------------
    def complete(self, request: Request) -> Completion:
        r = self._begin(request)
        try:
            c = self.inner.complete(request)
        except Deferred as d:  # left for a provider batch: no call was made
            self._deferred(r, d)
            raise
        except BaseException:
            self._settle(request, r, None, error=True)
            raise
        overrun = self._settle(request, r, c)
        if overrun is not None:
            raise overrun
        return c

    async def acomplete(self, request: Request) -> Completion:
        r = self._begin(request)
        try:
            c = await self.inner.acomplete(request)
        except Deferred as d:  # left for a provider batch: no call was made
            self._deferred(r, d)
            raise
        except BaseException:
            self._settle(request, r, None, error=True)
            raise
        overrun = self._settle(request, r, c)
        if overrun is not None:
            raise overrun
        return c

    def _deferred(self, r: _Reservation, d: Deferred) -> None:
        with self._ledger.lock:
            if r.booked:
                self._book(r, -1)
        if d.scope is not None:
            d.scope.bind_meter(d.key, self)

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
                "overruns": [dict(o) for o in led.overruns],
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
            led.overruns = []

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
