"""Chat messages as graph inputs: a history written the ways users write it, made wire-ready.

A message's content becomes a Variable (an input of the call that sends it), so feedback on
a reply can reach the message -- a Parameter, an earlier reply -- that caused it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core.values import has_images
from ..core.variable import Variable
from ..llm.base import Message, make_content
from .base import as_variable

ChatMessages = str | Variable | Sequence[Any]
"""``"hi"``, a Variable, or a list of ``{"role": r, "content": x}`` / ``(role, x)`` / Variables
(a bare item is a user message); ``x`` may be text, a Variable, a Parameter or an Image."""


def _wire_content(v: Variable) -> Any:
    return make_content(v.value) if has_images(v.value) else v.text


def _message(item: Any, index: int) -> tuple[Message, Variable | None]:
    """One history item as a wire message and the variable holding its content."""
    if isinstance(item, dict) and (item.get("role") == "tool" or item.get("tool_calls")):
        return dict(item), None  # already in wire form: sent as given
    if isinstance(item, dict):
        role, content = str(item.get("role") or "user"), item.get("content")
    elif isinstance(item, tuple) and len(item) == 2:
        role, content = str(item[0]), item[1]
    else:
        role, content = "user", item
    if role not in ("system", "user", "assistant", "developer"):
        raise ValueError(f"message {index}: unknown role {role!r}")
    var = as_variable(content, f"{role} message")
    return {"role": role, "content": _wire_content(var)}, var


def normalize_messages(messages: ChatMessages) -> tuple[list[Message], dict[str, Variable]]:
    """Wire messages and their content variables keyed ``user1``, ``assistant2``, ..."""
    items = [messages] if isinstance(messages, str | Variable) else list(messages)
    if not items:
        raise ValueError("a chat needs at least one message")
    wire: list[Message] = []
    inputs: dict[str, Variable] = {}
    for i, item in enumerate(items, 1):
        msg, var = _message(item, i)
        wire.append(msg)
        if var is not None:
            inputs[f"{msg['role']}{i}"] = var
    return wire, inputs


def is_message_list(value: Any) -> bool:
    """Whether ``value`` reads as a chat history rather than one value to send."""
    if not isinstance(value, list | tuple) or not value:
        return False
    return all((isinstance(m, dict) and "role" in m)
               or (isinstance(m, tuple) and len(m) == 2 and isinstance(m[0], str))
               for m in value)


__all__ = ["ChatMessages", "is_message_list", "normalize_messages"]
