"""What a run spends: the usage ledgers behind its engines, read as one, and its budget.

A program may hold several engines (the task model, the optimizer's, a judge), each
with its own meter or sharing one. The run's usage is the sum over the distinct ledgers;
the run's budget is handed to each of them, and checked on the sum between steps.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..core.variable import Variable
from ..llm.base import find_engine
from ..llm.meter import Budget, Meter

__all__ = ["Meters", "as_budget", "describe_engine", "engines_in", "over_budget", "usage_totals"]

_TALLY_KEYS = (
    "calls",
    "cached_calls",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "usd",
)


def _add(a: dict[str, Any], b: dict[str, Any], sign: int = 1) -> dict[str, Any]:
    out = dict(a)
    for k in _TALLY_KEYS:
        v = b.get(k)
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[k] = round(out.get(k, 0) + sign * v, 10)
    return out


def _zero() -> dict[str, Any]:
    return {k: 0 for k in _TALLY_KEYS} | {"usd": 0.0}


class Meters:
    """The distinct usage ledgers behind the run's engines, read as one."""

    def __init__(self, engines: Iterable[Any]) -> None:
        self.meters: list[Any] = []
        self.unmetered: list[Any] = []
        seen: set[int] = set()
        for e in engines:
            m = find_engine(e, Meter)
            if m is None:
                if all(e is not u for u in self.unmetered):
                    self.unmetered.append(e)
                continue
            key = id(getattr(m, "_ledger", m))
            if key not in seen:
                seen.add(key)
                self.meters.append(m)
        self._saved_budgets: list[Any] = []

    def snapshot(self) -> dict[str, Any]:
        total = _zero()
        by_purpose: dict[str, dict[str, Any]] = {}
        for m in self.meters:
            snap = m.snapshot()
            total = _add(total, snap.get("total", {}))
            for p, t in (snap.get("by_purpose") or {}).items():
                by_purpose[p] = _add(by_purpose.get(p, _zero()), t)
        return {"total": total, "by_purpose": by_purpose, "metered": bool(self.meters)}

    @staticmethod
    def delta(now: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
        out = {"total": _add(now["total"], before.get("total", {}), -1), "by_purpose": {}}
        for p, t in now.get("by_purpose", {}).items():
            d = _add(t, before.get("by_purpose", {}).get(p, {}), -1)
            if any(d.get(k) for k in _TALLY_KEYS):
                out["by_purpose"][p] = d
        return out

    def usage_since(self, start: dict[str, Any], prior: dict[str, Any]) -> dict[str, Any]:
        """Usage since the ``start`` snapshot, plus ``prior`` (spent before a resume)."""
        now = self.snapshot()
        d = Meters.delta(now, start)
        d["total"] = _add(d["total"], prior.get("total", {}))
        for p, t in prior.get("by_purpose", {}).items():
            d["by_purpose"][p] = _add(d["by_purpose"].get(p, _zero()), t)
        d["metered"] = now["metered"]
        return d

    def attach(self, budget: Any, spent_before: dict[str, Any]) -> list[str]:
        """Give every ledger the run's remaining budget; returns warnings to record."""
        notes: list[str] = []
        if not self.meters:
            raise ValueError(
                "budget= needs metered engines: build them with tg.LLM(...) or wrap them with "
                "tracegrad.llm.Meter(engine); no engine of this run is metered"
            )
        if self.unmetered:
            names = ", ".join(
                sorted({getattr(e, "model", type(e).__name__) for e in self.unmetered})
            )
            notes.append(f"budget does not cover unmetered engines: {names}")
        if len(self.meters) > 1:
            notes.append(
                f"{len(self.meters)} separate meters: each enforces the budget alone; "
                "the run also checks the sum between steps"
            )
        for m in self.meters:
            self._saved_budgets.append((m, m.budget))
            used = m.snapshot().get("total", {})

            def lim(limit: float | None, used_now: float, before: float) -> float | None:
                return None if limit is None else used_now + max(0.0, limit - before)

            m.budget = Budget(
                usd=lim(budget.usd, used.get("usd", 0.0), spent_before.get("usd", 0.0)),
                tokens=None
                if budget.tokens is None
                else int(
                    lim(
                        budget.tokens,
                        used.get("total_tokens", 0),
                        spent_before.get("total_tokens", 0),
                    )
                    or 0
                ),
                calls=None
                if budget.calls is None
                else int(
                    lim(budget.calls, used.get("calls", 0), spent_before.get("calls", 0)) or 0
                ),
            )
        return notes

    def detach(self) -> None:
        for m, b in self._saved_budgets:
            m.budget = b
        self._saved_budgets = []


def as_budget(budget: Any) -> Any:
    if budget is None:
        return None
    if isinstance(budget, Budget):
        return budget
    if isinstance(budget, Mapping):
        return Budget(**budget)
    if isinstance(budget, int | float):
        return Budget(usd=float(budget))
    raise TypeError(f"budget must be a tg.Budget, a dict or a dollar amount, got {budget!r}")


def engines_in(obj: Any, depth: int = 0, seen: set[int] | None = None) -> Iterator[Any]:
    """Engines a program holds (``LLMCall.llm`` and the like), found by walking attributes."""
    seen = seen if seen is not None else set()
    if obj is None or id(obj) in seen or depth > 5:
        return
    seen.add(id(obj))
    if callable(getattr(obj, "complete", None)) and hasattr(obj, "model") and depth > 0:
        yield obj
        return
    if isinstance(obj, Mapping):
        children: Iterable[Any] = obj.values()
    elif isinstance(obj, list | tuple):
        children = obj
    elif isinstance(obj, str | bytes | int | float | bool | Variable):
        return
    elif inspect.isfunction(obj):  # a closure may hold the engine (llm_judge, plain functions)
        children = []
        for cell in obj.__closure__ or ():
            with contextlib.suppress(ValueError):  # an empty cell
                children.append(cell.cell_contents)
    elif hasattr(obj, "__dict__") and not inspect.isclass(obj) and not inspect.ismodule(obj):
        children = [v for k, v in vars(obj).items() if not k.startswith("__")]
    else:
        return
    for child in children:
        yield from engines_in(child, depth + 1, seen)


def describe_engine(engine: Any) -> dict[str, Any] | None:
    """What a run records about an engine: the model and the wrapper chain, never keys."""
    if engine is None:
        return None
    chain, e, inner = [], engine, engine
    while e is not None and len(chain) < 20:
        chain.append(type(e).__name__)
        inner = e
        e = getattr(e, "inner", None)
    out: dict[str, Any] = {"model": getattr(engine, "model", None), "chain": chain}
    url = getattr(inner, "display_url", None) or getattr(inner, "base_url", None)
    if isinstance(url, str):
        out["base_url"] = url
    params = getattr(inner, "params", None)
    if isinstance(params, dict):
        out["params"] = {
            k: v for k, v in params.items() if isinstance(v, str | int | float | bool | type(None))
        }
    return out




def over_budget(total: Mapping[str, Any], budget: Budget) -> bool:
    """Whether a usage total has reached the budget on any of its limits."""
    return (
        (budget.usd is not None and total["usd"] >= budget.usd)
        or (budget.tokens is not None and total["total_tokens"] >= budget.tokens)
        or (budget.calls is not None and total["calls"] >= budget.calls)
    )


def usage_totals(usage: Any) -> dict[str, Any]:
    """The totals of a usage record (or of a bare tally), as plain numbers for printing."""
    if isinstance(usage, dict):
        total = usage.get("total", usage)
    else:
        total = {}
    return {
        "calls": int(total.get("calls", 0) or 0),
        "cached_calls": int(total.get("cached_calls", 0) or 0),
        "prompt_tokens": int(total.get("prompt_tokens", 0) or 0),
        "completion_tokens": int(total.get("completion_tokens", 0) or 0),
        "total_tokens": int(total.get("total_tokens", 0) or 0),
        "usd": float(total.get("usd", 0.0) or 0.0),
        "cut_replies": int(total.get("cut_replies", 0) or 0),
        "empty_replies": int(total.get("empty_replies", 0) or 0),
    }
