"""Feedback that is over an optimizer's budget, cut to fit without an LLM call.

A batch of 64 failing examples yields 64 critiques, far more than an update request
should carry (DESIGN principle 5). Asking a model to summarise them costs a whole
serial call before the update can start -- on a real model seconds, on every step --
and what it drops is unaudited. This cut is deterministic instead: critiques that say
nearly the same thing (by word overlap) become one point with the number of runs that
raised it, points are shown most frequent first -- as many distinct points as fit, each
with the context of its example when room is left -- a few "keep this, it works" items
stay so a rewrite does not break what works, and what did not fit is counted, not
silently lost. ``condense="summary"`` on TGD and the Trace optimizer still asks a model
instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .feedback import FeedbackItem, feedback_block, is_positive, shown_context

_WORD = re.compile(r"[a-z0-9]+")
_BLOCK = 90  # the tags, attributes and context labels of one block, about
_TEXT = 400  # a point's text is cut to this; what is left goes to the examples' context
_KEEP_POSITIVE = 2


@dataclass
class Condensed:
    """What ``condense_feedback`` shows and what it left out."""

    text: str
    shown: list[FeedbackItem]
    points: int
    omitted: int
    omitted_runs: int

    @property
    def detail(self) -> str:
        return (f"merged into {self.points} points by wording, {len(self.shown)} items shown"
                + (f", {self.omitted} points ({self.omitted_runs} runs) left out"
                   if self.omitted else ""))


def _words(text: str) -> frozenset[str]:
    return frozenset(w for w in _WORD.findall(text.lower()) if len(w) > 2 and not w.isdigit())


def _signatures(items: list[FeedbackItem]) -> list[frozenset[str]]:
    """Each item's distinctive words: those in at most half of the items, so the wording
    every critique shares ("the prompt should ... was expected") does not make them alike."""
    words = [_words(it.text) for it in items]
    if len(words) < 4:
        return words
    df: dict[str, int] = {}
    for ws in words:
        for w in ws:
            df[w] = df.get(w, 0) + 1
    common = {w for w, n in df.items() if n > len(words) / 2}
    return [ws - common for ws in words]


def group_feedback(items: list[FeedbackItem], *, similarity: float = 0.6) -> list[FeedbackItem]:
    """Items whose words overlap by ``similarity`` (Jaccard) or more merged into one.

    The most frequent item of a group speaks for it; the group's count is the sum of
    its members'. Items about different parameters (Trace's ``concerns``) never merge.
    Returns the groups most frequent first (ties keep the order the items came in).
    """
    groups: list[tuple[frozenset[str], FeedbackItem]] = []
    ordered = sorted(items, key=lambda i: -i.count)
    for it, words in zip(ordered, _signatures(ordered), strict=True):
        best, best_sim = None, similarity
        for j, (w, g) in enumerate(groups):
            if g.context.get("concerns") != it.context.get("concerns"):
                continue
            # no distinctive word on either side: both say only what (nearly) all say
            sim = len(words & w) / len(words | w) if words or w else 1.0
            if sim >= best_sim:
                best, best_sim = j, sim
        if best is None:
            groups.append((words, replace(it, sources=list(it.sources), context=dict(it.context))))
            continue
        g = groups[best][1]
        g.count += it.count
        g.sources += [s for s in it.sources if s not in g.sources]
    return sorted((g for _, g in groups), key=lambda g: -g.count)


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def _text_size(it: FeedbackItem) -> int:
    """What a point's block takes before any context: its (cut) text and its tags."""
    return min(len(it.text), _TEXT) + _BLOCK


def _fit(points: list[FeedbackItem], keep: list[FeedbackItem],
         room: int) -> tuple[list[FeedbackItem], list[FeedbackItem]]:
    """As many points as fit at their text alone (most frequent first), then the kept
    successes if they fit too; (chosen, left out). Distinct points first: a rewrite can
    fix a problem it is told about without its example, not one it is never told about."""
    chosen: list[FeedbackItem] = []
    size = 0
    for it in points:
        need = _text_size(it)
        if chosen and size + need > room:
            break
        chosen.append(it)
        size += need
    left = points[len(chosen):]
    for it in keep:
        need = _text_size(it)
        if size + need <= room:
            chosen.append(it)
            size += need
    return chosen, left


def condense_feedback(items: list[FeedbackItem], *, limit: int,
                      context_limit: int = 400) -> Condensed:
    """A view of ``items`` in at most about ``limit`` characters; see the module doc."""
    positive, failing = [], []
    for it in items:
        (positive if is_positive(it) else failing).append(it)
    points = group_feedback(failing)
    runs = sum(it.count for it in items)
    head = (f"(Feedback from {runs} runs, {len(items)} distinct items: too long to show in "
            f"full, so items that say nearly the same are merged into {len(points)} points, "
            "shown most frequent first; `times` is how many runs raised a point.)")
    room = max(limit - len(head) - 240, _TEXT + _BLOCK)
    chosen, left = _fit(points, positive[:_KEEP_POSITIVE], room)
    # what the texts leave goes to the examples behind them, evenly
    spare = room - sum(_text_size(it) for it in chosen)
    keys = sum(len(shown_context(it)) for it in chosen)
    per_key = min(context_limit, spare // keys) if keys else 0
    blocks = [feedback_block(i, it, context_limit=per_key if per_key >= 40 else 0,
                             text_limit=_TEXT) for i, it in enumerate(chosen, 1)]
    omitted_runs = sum(it.count for it in left)
    notes = []
    if left:
        most = max(it.count for it in left)
        what = "1 less frequent point" if len(left) == 1 else f"{len(left)} less frequent points"
        notes.append(f"[{what} from {_runs(omitted_runs)} left out to keep this bounded; "
                     f"each was raised by at most {_runs(most)}]")
    ok_runs = sum(it.count for it in positive)
    if ok_runs:
        notes.append(f"[{_runs(ok_runs)} needed no change]")
    text = "\n".join([head, *blocks, *notes])
    return Condensed(text, chosen, len(points), len(left), omitted_runs)


__all__ = ["Condensed", "condense_feedback", "group_feedback"]
