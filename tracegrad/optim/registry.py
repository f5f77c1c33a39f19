"""Optimizer names: the one table behind ``optimizer="tgd"`` in ``tg.optimize`` and the CLI.

A name chooses a class and, for some names, options of it (``tgd-batched`` is TGD with
``batch_feedback=True``). Building, listing and estimating by name all read this table,
so a new name is added once and every entry point knows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from ..core.variable import Parameter
from .base import Optimizer
from .opro import OPRO
from .reflect import SEARCH as REFLECT_SEARCH
from .reflect import Reflect
from .tgd import TGD
from .trace import TraceOptimizer

_Entry = tuple[type[Optimizer], Mapping[str, Any]]
_NONE: Mapping[str, Any] = MappingProxyType({})

# the main names, in the order help texts list them
OPTIMIZERS: Mapping[str, _Entry] = MappingProxyType({
    "tgd": (TGD, _NONE),
    "tgd-batched": (TGD, MappingProxyType({"batch_feedback": True})),
    "trace": (TraceOptimizer, _NONE),
    "opro": (OPRO, _NONE),
    "reflect": (Reflect, _NONE),
    # reflect without the backward critiques: the metric's feedback along the trace only
    "reflect-lean": (Reflect, MappingProxyType({"critique": False})),
})
# trainer settings a name is meant to run with; an option the caller gives wins
SEARCH: Mapping[str, Mapping[str, Any]] = MappingProxyType({"reflect": REFLECT_SEARCH,
                                                            "reflect-lean": REFLECT_SEARCH})


def search_defaults(optimizer: Any) -> dict[str, Any]:
    """The trainer settings for ``optimizer`` (a name, or an instance/class of one)."""
    if isinstance(optimizer, str):
        key = optimizer.strip().lower()
        return dict(SEARCH.get(ALIASES.get(key, key), {}))
    cls = optimizer if isinstance(optimizer, type) else type(optimizer)
    return next((dict(SEARCH[n]) for n, (c, _) in OPTIMIZERS.items() if c is cls and n in SEARCH),
                {})
# other names users know them by (the papers' names)
ALIASES: Mapping[str, str] = MappingProxyType({
    "textgrad": "tgd", "textual": "tgd", "optoprime": "trace",
})


def optimizer_names(aliases: bool = True) -> list[str]:
    """Every name :func:`build_optimizer` accepts, sorted; ``aliases=False``: only the
    main names, in the order help texts list them (tgd, tgd-batched, trace, opro)."""
    return sorted([*OPTIMIZERS, *ALIASES]) if aliases else list(OPTIMIZERS)


def resolve(name: str) -> _Entry:
    """The class and options a name stands for (case and surrounding space ignored)."""
    key = name.strip().lower()
    entry = OPTIMIZERS.get(ALIASES.get(key, key))
    if entry is None:
        raise ValueError(f"unknown optimizer {name!r}; use one of "
                         f"{', '.join(optimizer_names())} or an Optimizer instance")
    return entry


def build_optimizer(
    optimizer: str | type[Optimizer] | Optimizer | Any,
    params: Iterable[Parameter] | Any,
    *,
    engine: Any = None,
    max_concurrency: int | None = None,
    **options: Any,
) -> Any:
    """An optimizer for ``params`` from a name, a class, or an instance (returned as is).

    ``options`` go to the constructor on top of those the name implies.
    """
    if isinstance(optimizer, str):
        cls, implied = resolve(optimizer)
        options = {**implied, **options}
    elif isinstance(optimizer, type):
        cls = optimizer
    else:
        return optimizer
    return cls(params, engine=engine, max_concurrency=max_concurrency, **options)


def calls_per_step(optimizer: str | type[Optimizer] | Optimizer, n_params: int, n_failures: int,
                   batch: int, **details: Any) -> dict[str, int]:
    """:meth:`Optimizer.calls_per_step` by name, for an estimate made before any parameter
    exists (a stand-in parameter is used; the declaration does not depend on its value)."""
    opt = build_optimizer(optimizer, [Parameter("stand-in", name="estimate")])
    return opt.calls_per_step(n_params, n_failures, batch, **details)


__all__ = [
    "ALIASES", "OPTIMIZERS", "SEARCH", "build_optimizer", "calls_per_step", "optimizer_names",
    "resolve", "search_defaults",
]
