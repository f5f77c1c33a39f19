"""Bounded context: every long value that goes into a prompt passes through here."""

from __future__ import annotations

import json
from typing import Any

from .values import Image


def render(value: Any) -> str:
    """The text form of a value as a model should see it."""
    if isinstance(value, str):
        return value
    if isinstance(value, Image):
        return repr(value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    dump = getattr(value, "model_dump_json", None)  # a typed reply: its JSON, not its repr
    if callable(dump) and not isinstance(value, type):
        return str(dump())
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def shorten(value: Any, limit: int = 2000) -> str:
    """Keep the head and tail of a long value, with a visible marker of what was cut."""
    text = render(value)
    if limit <= 0 or len(text) <= limit:
        return text
    keep = max(limit - 40, 20)
    head, tail = keep * 2 // 3, keep - keep * 2 // 3
    cut = len(text) - head - tail
    return f"{text[:head]}\n…[{cut} characters omitted]…\n{text[len(text) - tail:]}"
