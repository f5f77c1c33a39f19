"""What a call costs, so that budgets can be stated in dollars.

Prices change and deployments differ, so the packaged table (``pricing.json``) is only a
default: a JSON file named by ``$TRACEGRAD_PRICING`` and then :func:`set_pricing` override
it, entry by entry. A model we have no price for (a local server, a new model) costs 0 and
is reported as unpriced, so a dollar budget never pretends to limit what it cannot see.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from .base import ConfigurationError, Usage

__all__ = ["Price", "cost", "price_for", "is_priced", "set_pricing", "pricing_table"]

_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")


BATCH_DISCOUNT = 0.5
"""What a Batch API call costs relative to a live one when the table gives no batch price
(OpenAI, Anthropic and most providers charge half)."""


@dataclass(frozen=True)
class Price:
    """USD per one million tokens; ``batch_*`` through a provider's Batch API (None: half)."""

    input: float
    output: float
    known: bool = True
    batch_input: float | None = None
    batch_output: float | None = None

    def cost(self, usage: Usage, *, batch: bool = False) -> float:
        inp, out = (self.batch_rates() if batch else (self.input, self.output))
        return (usage.prompt_tokens * inp + usage.completion_tokens * out) / 1e6

    def batch_rates(self) -> tuple[float, float]:
        """(input, output) USD per 1M tokens through the Batch API."""
        inp = self.input * BATCH_DISCOUNT if self.batch_input is None else self.batch_input
        out = self.output * BATCH_DISCOUNT if self.batch_output is None else self.batch_output
        return inp, out


_UNKNOWN = Price(0.0, 0.0, known=False)
_lock = threading.Lock()
_packaged: dict[str, Price] | None = None
_overrides: dict[str, Price] = {}
_env_cache: tuple[str, float, dict[str, Price]] | None = None


def _parse_table(data: Any, source: str) -> dict[str, Price]:
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"pricing table from {source} must be a JSON object")
    out: dict[str, Price] = {}
    for name, entry in data.items():
        if str(name).startswith("_"):  # comments
            continue
        try:
            if isinstance(entry, Mapping):
                batch = [entry.get(k) for k in ("batch_input", "batch_output")]
                price = Price(float(entry["input"]), float(entry["output"]), True,
                              *(None if b is None else float(b) for b in batch))
            else:
                inp, outp = entry
                price = Price(float(inp), float(outp))
        except (KeyError, TypeError, ValueError):
            raise ConfigurationError(
                f"pricing entry {name!r} from {source} must be "
                '{"input": USD_per_1M, "output": USD_per_1M} (optionally "batch_input" and '
                '"batch_output": the Batch API prices)'
            ) from None
        out[_normalize(str(name))] = price
    return out


def _load_packaged() -> dict[str, Price]:
    global _packaged
    if _packaged is None:
        text = resources.files(__package__).joinpath("pricing.json").read_text("utf-8")
        _packaged = _parse_table(json.loads(text), "pricing.json")
    return _packaged


def _load_env() -> dict[str, Price]:
    """The table in $TRACEGRAD_PRICING, re-read when the path or the file changes."""
    global _env_cache
    path = os.environ.get("TRACEGRAD_PRICING")
    if not path:
        return {}
    try:
        mtime = os.stat(path).st_mtime
    except OSError as e:
        raise ConfigurationError(
            f"TRACEGRAD_PRICING names {path!r}, which cannot be read: {e}"
        ) from None
    if _env_cache is not None and _env_cache[0] == path and _env_cache[1] == mtime:
        return _env_cache[2]
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigurationError(
            f"TRACEGRAD_PRICING file {path!r} is not valid JSON: {e}"
        ) from None
    table = _parse_table(data, path)
    _env_cache = (path, mtime, table)
    return table


def _normalize(model: str) -> str:
    m = model.strip().lower()
    for prefix in ("openai:", "openai/"):
        if m.startswith(prefix):
            m = m[len(prefix) :]
    return m


def price_for(model: str | None) -> Price:
    """The price of ``model``; dated snapshots (``gpt-4o-2024-08-06``) use their base entry."""
    if not model:
        return _UNKNOWN
    name = _normalize(model)
    with _lock:
        tables = [_overrides, _load_env(), _load_packaged()]
    candidates = [name]
    base = _DATE_SUFFIX.sub("", name)
    if base != name:
        candidates.append(base)
    for table in tables:
        for c in candidates:
            if c in table:
                return table[c]
    return _UNKNOWN


def is_priced(model: str | None) -> bool:
    return price_for(model).known


def cost(model: str | None, usage: Usage, *, batch: bool = False) -> float:
    """USD for ``usage`` on ``model`` (through the Batch API with ``batch``); 0.0 for models
    without a price."""
    return price_for(model).cost(usage, batch=batch)


def set_pricing(table: Mapping[str, Any] | None, *, replace: bool = False) -> None:
    """Override prices: ``{"my-model": {"input": 0.5, "output": 1.5}}`` (USD per 1M tokens).

    Entries are merged over earlier overrides unless ``replace`` is true; ``None`` removes
    all overrides.
    """
    global _overrides
    parsed = _parse_table(table or {}, "set_pricing()")
    with _lock:
        if table is None or replace:
            _overrides = parsed
        else:
            _overrides = {**_overrides, **parsed}


def pricing_table() -> dict[str, dict[str, float]]:
    """The effective table (packaged, then $TRACEGRAD_PRICING, then overrides), JSON-able."""
    with _lock:
        merged = {**_load_packaged(), **_load_env(), **_overrides}
    return {k: {"input": v.input, "output": v.output, "batch_input": v.batch_rates()[0],
                "batch_output": v.batch_rates()[1]} for k, v in sorted(merged.items())}
