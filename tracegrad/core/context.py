"""Per-thread / per-task tracing state, kept in contextvars so concurrent pipelines never mix."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

_grad_enabled: contextvars.ContextVar[bool] = contextvars.ContextVar("tg_grad", default=True)
_backward_llm: contextvars.ContextVar[Any] = contextvars.ContextVar("tg_backward_llm", default=None)
_default_backward_llm: list[Any] = [None]


def is_grad_enabled() -> bool:
    return _grad_enabled.get()


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Run ops without recording the graph (evaluation, inference)."""
    token = _grad_enabled.set(False)
    try:
        yield
    finally:
        _grad_enabled.reset(token)


@contextlib.contextmanager
def enable_grad() -> Iterator[None]:
    token = _grad_enabled.set(True)
    try:
        yield
    finally:
        _grad_enabled.reset(token)


def set_backward_llm(engine: Any) -> None:
    """Set the engine that writes feedback, judges and rewrites, for the whole process."""
    _default_backward_llm[0] = engine


@contextlib.contextmanager
def backward_llm(engine: Any) -> Iterator[None]:
    """Use ``engine`` as the backward engine within this block (this thread/task only)."""
    token = _backward_llm.set(engine)
    try:
        yield
    finally:
        _backward_llm.reset(token)


def get_backward_llm(required: bool = True) -> Any:
    engine = _backward_llm.get() or _default_backward_llm[0]
    if engine is None and required:
        raise RuntimeError(
            "no backward engine: call tg.set_backward_llm(tg.LLM('openai:MODEL')) or pass "
            "engine=... (tests: tg.testing.MockLLM())"
        )
    return engine
