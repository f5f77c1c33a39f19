"""Feedback on parameters: how it is collected, judged and shown to optimizers.

The path of feedback for a prompt: a metric (``MetricLoss``) writes text on the loss,
``Op.backward`` routes it to each op's inputs, the backward pass (``tracegrad.backward``)
turns output feedback into input feedback, and an optimizer reads the parameter's
``grads``. This module owns the last mile: ``collect_feedback`` de-duplicates the grads,
``is_positive`` (``says_no_change`` for bare text) is THE definition of "this feedback
asks for no change", and ``render_feedback`` formats items for an optimizer request. It
imports only from ``core`` so every layer above can share it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .shorten import shorten
from .variable import Feedback, Parameter, Variable, topo_order


@dataclass
class FeedbackItem:
    """One distinct feedback text on a parameter, however many runs produced it."""

    text: str
    sources: list[str]
    context: dict[str, Any]
    count: int = 1
    feedback: Feedback | None = None


def collect_feedback(grads: Iterable[Feedback]) -> list[FeedbackItem]:
    """De-duplicate feedback by text (whitespace-insensitive), keeping the first context."""
    items: dict[str, FeedbackItem] = {}
    for g in grads:
        key = " ".join(g.text.split())
        if not key:
            continue
        item = items.get(key)
        if item is None:
            items[key] = FeedbackItem(g.text.strip(), [g.source] if g.source else [], dict(g.context),
                                      1, g)
        else:
            item.count += 1
            if g.source and g.source not in item.sources:
                item.sources.append(g.source)
    return list(items.values())


_POSITIVE = re.compile(
    r"(?:no (?:further )?changes? (?:is |are )?(?:needed|required|necessary)"
    r"|nothing (?:needs )?to (?:change|improve|fix)"
    r"|(?:the )?(?:answer|output|result|response|solution|prediction) is correct"
    r"|(?:all )?correct|looks good|lgtm|none|n/?a|perfect"
    r"|correct: expected .* and got it)[\s.!]*",
    re.I | re.S,
)
_INDEX = re.compile(r"^\[\d+\]\s*")


def is_positive(fb: Feedback | FeedbackItem) -> bool:
    """True when a feedback item asks for no change.

    Decided without an LLM: either the context marks a successful example
    (``success: true`` or ``score >= 1``), or every line of the text is one of the stock
    "nothing to change" phrases (including MetricLoss's "Correct: expected X and got it.").
    """
    ctx = fb.context or {}
    if ctx.get("success") is True:
        return True
    score = ctx.get("score")
    if isinstance(score, int | float) and not isinstance(score, bool) and score >= 1.0:
        return True
    return says_no_change(fb.text)


_VERDICT = re.compile(r"^[\W_]*verdict[\W_]*?\s*[:=\-]?\s*[\W_]*(pass|fail)(?:ed|es)?\b[\W_]*$",
                      re.I | re.M)


def verdict(text: str) -> bool | None:
    """A judge's machine-readable verdict: True for a line ``VERDICT: PASS``, False for
    ``VERDICT: FAIL`` (the last such line wins), None when the text has none.

    The judge prompts ask for it last, after the reasoning, so that "is this example
    fine?" is read off the line rather than guessed from the wording of the critique.
    """
    found = _VERDICT.findall(text or "")
    return found[-1].lower() == "pass" if found else None


def says_no_change(text: str) -> bool:
    """True when the text carries a PASS verdict (see :func:`verdict`), or when every line
    of ``text`` is a stock "nothing to change" phrase.

    The one list of those phrases: backward uses it to drop an input's "no change
    needed", optimizers (through :func:`is_positive`) to skip feedback that asks for
    nothing.
    """
    judged = verdict(text)
    if judged is not None:
        return judged
    lines = [_INDEX.sub("", ln).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    return bool(lines) and all(_POSITIVE.fullmatch(ln) for ln in lines)


_CONTEXT_SKIP = {"kind", "nodes", "fallback", "outputs", "success", "score"}


def render_feedback(items: list[FeedbackItem], *, context_limit: int = 400,
                    text_limit: int | None = None) -> str:
    return "\n".join(feedback_block(i, it, context_limit=context_limit, text_limit=text_limit)
                     for i, it in enumerate(items, 1))


def feedback_block(n: int, it: FeedbackItem, *, context_limit: int = 400,
                   text_limit: int | None = None) -> str:
    """Item ``n`` as one ``<feedback>`` block: its text, how many runs said it, its context."""
    attrs = f' n="{n}"'
    if it.sources:
        attrs += f' from="{", ".join(it.sources[:3])}{", ..." if len(it.sources) > 3 else ""}"'
    if it.count > 1:
        attrs += f' times="{it.count}"'
    text = it.text if text_limit is None else shorten(it.text, text_limit)
    ctx_lines = [f"  {k}: {shorten(v, context_limit)}" for k, v in shown_context(it)]
    ctx = ("\ncontext:\n" + "\n".join(ctx_lines)) if ctx_lines and context_limit > 0 else ""
    return f"<feedback{attrs}>\n{text}{ctx}\n</feedback>"


def shown_context(it: FeedbackItem) -> list[tuple[str, Any]]:
    """The context entries a ``<feedback>`` block shows (bookkeeping keys and empty values
    are left out)."""
    return [(k, v) for k, v in it.context.items()
            if k not in _CONTEXT_SKIP and v not in (None, "", [], {})]


__all__ = [
    "Evidence", "Feedback", "FeedbackItem", "collect_feedback", "feedback_block", "is_positive",
    "positive_feedback", "render_evidence", "render_feedback", "says_no_change", "shown_context",
    "verdict",
]


def positive_feedback(inputs: Any, output: Any) -> str:
    """What backward is told about a correctly answered example: keep what works.

    Without a few of these, feedback from failures alone pushes a prompt to fix one case
    by breaking the ones it already gets right.
    """
    return (
        f"This example was answered correctly (input {shorten(inputs, 300)}; "
        f"output {shorten(output, 300)!r}). Keep what makes it work."
    )


# -- evidence: what the examples themselves showed ------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """One example of a step as the metric saw it: the raw material feedback is made from.

    Backward critiques are a model's reading of this; an optimizer that also sees the
    example itself (what went in, what was expected, what came out, why it scored so)
    can check the critique against it instead of taking it on trust.
    """

    inputs: Any
    expected: Any
    output: Any
    score: float
    explanation: str = ""
    id: str = ""
    # parameter id -> (what the step it configures read, what that step wrote), for the
    # steps inside a pipeline; see :func:`step_io`
    steps: dict[int, tuple[str, str]] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.score < 1.0


def step_io(output: Variable | None) -> dict[int, tuple[str, str]]:
    """For each trainable parameter in ``output``'s graph: what its step read and wrote.

    In a pipeline, an example's input, expected and final output do not show what an early
    step did: a summary that dropped the fact the router needed looks fine next to the
    ticket, and is wrong only next to the final label. A reflection on that step's prompt
    needs the step's own output beside the final result (GEPA's per-module reflective
    records make the same point). Only the first op a parameter configures is kept; the
    texts are cut to keep a table row bounded.
    """
    if output is None:
        return {}
    found: dict[int, tuple[str, str]] = {}
    for node in topo_order(output):
        if node.op is None:
            continue
        params = [p for p in node.parents if isinstance(p, Parameter) and p.requires_grad]
        if not params:
            continue
        read = " | ".join(shorten(v.value, 300) for v in node.parents
                          if not isinstance(v, Parameter) and not _is_input(v))
        wrote = shorten(node.value, 300)
        for p in params:
            found.setdefault(p.id, (read, wrote))
    return found


def _is_input(v: Variable) -> bool:
    """A leaf the caller passed in (the example's own input): already in the row."""
    return v.op is None


def render_evidence(rows: Iterable[Evidence], *, budget: int = 4000, row_limit: int = 700,
                    successes: int = 2, offset: int = 0, param: Variable | None = None) -> str:
    """A bounded table of a step's examples: failures grouped by problem, then a few successes.

    The cut is stratified, not "the first N": failures are grouped by their explanation
    (the same problem seen several times is one group, shown with its count), groups are
    taken largest first and round-robin, so the most frequent problems come first and a
    rare one is not crowded out by one that repeats. A few correct examples follow, so a
    rewrite can fix what fails without breaking what works. ``offset`` rotates which
    problem comes first, so several proposals of one step can each lead with another.
    ``param``: the parameter being rewritten; where it configures a step inside a pipeline,
    each row also shows what that step read and wrote (see :func:`step_io`).
    """
    rows = list(rows)
    groups: dict[str, list[Evidence]] = {}
    for r in rows:
        if r.failed:
            groups.setdefault(_problem_key(r), []).append(r)
    order = sorted(groups.values(), key=len, reverse=True)
    if order and offset:
        k = offset % len(order)
        order = order[k:] + order[:k]
    picked: list[tuple[Evidence, int]] = []
    for depth in range(max((len(g) for g in order), default=0)):
        picked += [(g[depth], len(g)) for g in order if depth < len(g)]
    good = [r for r in rows if not r.failed][:successes]
    failed = sum(1 for r in rows if r.failed)
    out = [f"{failed} of {len(rows)} examples failed."]
    size = len(out[0])
    for i, (r, n) in enumerate(picked, 1):
        same = f" (the same problem in {n} examples)" if n > 1 else ""
        block = shorten(_evidence_block(f"Failing example {i}{same}", r, param), row_limit)
        if size + len(block) > budget:
            out.append(f"({len(picked) - i + 1} more failing examples not shown)")
            break
        out.append(block)
        size += len(block)
    for r in good:
        block = shorten(_evidence_block("Correct example (keep this working)", r, param), row_limit)
        if size + len(block) <= budget:
            out.append(block)
            size += len(block)
    return "\n\n".join(out)


def _problem_key(r: Evidence) -> str:
    """An explanation with this example's own values taken out: "expected 3, got three"
    and "expected 7, got seven" are the same problem."""
    text = " ".join(r.explanation.split())
    for value, mark in ((r.output, "<got>"), (r.expected, "<expected>")):
        v = shorten(value, 200) if not isinstance(value, str) else value.strip()
        if v:
            text = text.replace(v, mark)
    return re.sub(r"\d+", "#", text)[:200]


def _evidence_block(title: str, r: Evidence, param: Variable | None = None) -> str:
    shown_input = shorten(r.inputs, 400)
    lines = [f"### {title}", f"input: {shown_input}"]
    read, wrote = r.steps.get(param.id, ("", "")) if param is not None else ("", "")
    final = shorten(r.output, 300)
    if read:  # a later step of a pipeline: what the earlier steps handed it
        lines.append(f"this step read: {read}")
    if wrote and wrote != final:  # an earlier step: what it made of its input
        lines.append(f"this step wrote: {wrote}")
    lines += [f"expected: {shorten(r.expected, 200)}", f"got: {shorten(r.output, 200)}"]
    if r.explanation:
        lines.append(f"why: {shorten(r.explanation, 300)}")
    return "\n".join(lines)
