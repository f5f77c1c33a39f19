"""How an optimizer's request shows what was tried before and how it scored.

``Optimizer.record_score`` keeps (values, score) entries; the next request shows the
recent ones so a step does not undo what an earlier step got right ("momentum"). TGD
and the trace optimizer render that history with this one function, and OPRO's
scoreboard uses the same score wording, so every optimizer describes a score the same
way and a fix to the rendering reaches all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.shorten import shorten
from ..core.variable import Parameter
from .base import same_value, value_text

HEADING = "## Earlier values and their scores (oldest first; higher is better)"


def score_text(entry: Mapping[str, Any]) -> str:
    """``score 0.75``, plus how many evaluations it averages when more than one."""
    text = f"score {entry['score']:.4g}"
    if entry.get("n", 1) > 1:
        text += f" (mean of {entry['n']} evaluations)"
    return text


def render_history(
    history: list[dict[str, Any]],
    params: Mapping[str, Parameter],
    *,
    size: int,
    value_limit: int,
    single: bool = False,
) -> str:
    """The request section for the last ``size`` entries that hold any of ``params``.

    Oldest first; a value equal to the current one is referred to, not repeated.
    ``single=True`` is the form for a request about one variable: its value unlabelled,
    with the feedback it was written in response to. A request about several variables
    labels each value by name and leaves that out: the reason is shared by the whole
    step and would repeat for every parameter. Empty when there is nothing to show.
    """
    if size <= 0:
        return ""
    entries = [e for e in history if any(n in e.get("values", {}) for n in params)][-size:]
    blocks = []
    for e in entries:
        lines = [f"### After step {e['step']}: {score_text(e)}"]
        for name, p in params.items():
            if name not in e["values"]:
                continue
            lines.append(_value_line(name, e["values"][name], p, value_limit, single))
            led = (e.get("led_to") or {}).get(name) if single else None
            if led:
                lines.append(f"written in response to: {shorten(led, 400)}")
        if e.get("feedback"):
            lines.append(f"evaluation: {shorten(e['feedback'], 400)}")
        blocks.append("\n".join(lines))
    return f"{HEADING}\n" + "\n\n".join(blocks) if blocks else ""


def _value_line(name: str, value: Any, p: Parameter, limit: int, single: bool) -> str:
    if same_value(value, p.value):
        return "value: the current value (shown above)" if single else f"{name}: the current value"
    block = f"<value>\n{shorten(value_text(value), limit)}\n</value>"
    return block if single else f"{name}:\n{block}"


__all__ = ["HEADING", "render_history", "score_text"]
