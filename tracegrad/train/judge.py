"""The LLM-judge metric: a model grades an answer against a rubric.

The judge reasons first and ends with a score and a ``VERDICT: PASS``/``FAIL`` line: a
score written before the reasoning is a guess the reasoning then defends, and the verdict
line is what :func:`tracegrad.core.feedback.is_positive` reads, so a passing example's
explanation asks for no change and costs no backward call. Replies in the older forms
("Score: 7" then "Reason: ...", JSON, "7/10") still parse. The judge sees the example's
inputs, because "is this a good answer?" depends on the question.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..core.feedback import verdict as read_verdict
from ..core.shorten import shorten
from .textmatch import text_of

__all__ = ["UNREADABLE", "Judgement", "llm_judge", "parse_judgement", "read_judgement"]

# how an unreadable judge reply's explanation starts: eval summaries count these apart
UNREADABLE = "The judge's reply had no readable score or verdict (counted as 0)"

# a failing answer must score below 1: 1 is what "this example succeeded" means everywhere
BELOW_PASS = 0.9

_SCORE_LINE = re.compile(
    r"^[\W_]*score[\W_]{0,3}\s*(?:is\s*)?[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*10\b)?",
    re.I | re.M)
_SCORE_PATTERNS = [
    re.compile(r"\bscore\W{0,3}\s*(?:is\s*)?[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*10\b)?", re.I),
    re.compile(r"(-?\d+(?:\.\d+)?)\s*/\s*10\b"),
    re.compile(r"(-?\d+(?:\.\d+)?)\s+out\s+of\s+10\b", re.I),
]
_REASON = re.compile(r"\breason(?:ing)?\W{0,3}\s*[:=]\s*(.+)", re.I | re.S)
_VERDICT_LINE = re.compile(r"^[\W_]*verdict\b.*$", re.I | re.M)


@dataclass
class Judgement:
    """A judge's reply, read: the 0-10 score and the verdict (each None when absent)."""

    score: float | None
    verdict: bool | None
    reason: str


def _from_json(text: str) -> Judgement | None:
    from ..llm.structured import extract_json

    try:
        data = extract_json(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    lowered = {str(k).lower(): v for k, v in data.items()}
    raw = lowered.get("score", lowered.get("rating", lowered.get("grade")))
    try:
        score = float(raw) if raw is not None and not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        score = None
    if score is not None and score != score:
        score = None
    judged = read_verdict(f"VERDICT: {lowered['verdict']}") if "verdict" in lowered else None
    if score is None and judged is None:
        return None
    reason = lowered.get("reason") or lowered.get("reasoning") or lowered.get(
        "explanation") or lowered.get("feedback") or ""
    return Judgement(score, judged, str(reason).strip())


def _score_match(text: str) -> re.Match[str] | None:
    """The score: the last "Score: N" line (it comes after the reasoning), else the first
    "score ... N", "N/10" or "N out of 10" anywhere."""
    lines = list(_SCORE_LINE.finditer(text))
    if lines:
        return lines[-1]
    for pat in _SCORE_PATTERNS:
        m = pat.search(text)
        if m:
            return m
    return None


def read_judgement(text: str) -> Judgement | None:
    """Score, verdict and reason from a judge reply in any of the forms the module doc
    lists; None when it has neither a score nor a verdict."""
    text = text or ""
    parsed = _from_json(text)
    if parsed is not None:
        return parsed
    judged = read_verdict(text)
    m = _score_match(text)
    score = float(m.group(1)) if m else None
    stripped = text.strip().strip("*.").strip()
    if score is None and re.fullmatch(r"-?\d+(?:\.\d+)?", stripped):
        return Judgement(float(stripped), judged, "")
    if score is None and judged is None:
        return None
    r = _REASON.search(text)
    if r:
        reason = _VERDICT_LINE.sub("", r.group(1))
    else:
        rest = text if m is None else text[: m.start()] + " " + text[m.end():]
        reason = _VERDICT_LINE.sub("", rest)
    return Judgement(score, judged, " ".join(reason.split()))


def parse_judgement(text: str) -> tuple[float, str] | None:
    """(score 0-10, reason) from a judge reply, or None (kept for callers of 0.1; a
    verdict without a score reads as 10 or 0)."""
    j = read_judgement(text)
    if j is None:
        return None
    score = j.score if j.score is not None else (10.0 if j.verdict else 0.0)
    return score, j.reason


def _judge_prompt() -> str:
    from .. import prompts

    return prompts.load("metric_judge")


def _passes(j: Judgement, pass_score: float | None) -> bool:
    """With ``pass_score`` the number decides; else the verdict; else (an old-format reply
    with no verdict) only a 10 passes, as before verdicts existed."""
    if pass_score is not None and j.score is not None:
        return j.score >= pass_score
    if j.verdict is not None:
        return j.verdict
    return j.score is not None and j.score >= 10


def score_judgement(j: Judgement, pass_score: float | None = None) -> tuple[float, str]:
    """(metric score, explanation): 1 for a pass, else the grade (below 1); the explanation
    ends with the verdict line so the feedback says by itself whether to change anything."""
    grade = None if j.score is None else min(10.0, max(0.0, j.score))
    ok = _passes(j, pass_score)
    if ok:
        value = 1.0
    else:
        value = 0.0 if grade is None else min(grade / 10.0, BELOW_PASS)
    head = "Judge" if grade is None else f"Judge score {grade:g}/10"
    if pass_score is not None:
        head += f" (pass at {pass_score:g})"
    return value, f"{head}. {j.reason}".strip() + f"\nVERDICT: {'PASS' if ok else 'FAIL'}"


def _judge_request(rubric: str, prediction: Any, expected: Any,
                   inputs: Mapping[str, Any] | None, show_expected: bool) -> Any:
    from ..llm.base import Request

    parts = [f"Rubric:\n{rubric}"]
    if inputs:
        blocks = "\n".join(f'<input name="{k}">\n{shorten(text_of(v), 3000)}\n</input>'
                           for k, v in inputs.items())
        parts.append(f"The task's inputs (what the answer responds to):\n{blocks}")
    parts.append(f"Answer to grade:\n<answer>\n{shorten(text_of(prediction), 6000)}\n</answer>")
    if show_expected and expected is not None and text_of(expected).strip():
        parts.append(f"Reference answer:\n<reference>\n{shorten(text_of(expected), 3000)}\n"
                     "</reference>")
    return Request(
        messages=[{"role": "system", "content": _judge_prompt()},
                  {"role": "user", "content": "\n\n".join(parts)}],
        purpose="judge",
    )


def llm_judge(rubric: str, engine: Any = None, *, show_expected: bool = True,
              show_inputs: bool = True, pass_score: float | None = None
              ) -> Callable[..., tuple[float, str]]:
    """A metric that asks a model to grade the answer against ``rubric``.

    The judge sees the example's inputs (``show_inputs``) and the reference answer
    (``show_expected``). An answer succeeds (scores 1) on a PASS verdict, or, with
    ``pass_score``, when its 0-10 grade reaches it; otherwise it scores its grade / 10,
    below 1. ``engine`` defaults to the backward engine (``tg.set_backward_llm``); calls
    have purpose "judge" so they are metered apart. A reply with neither a score nor a
    verdict counts 0, and the explanation says so, rather than failing the run.
    """

    def judge(prediction: Any, expected: Any, inputs: Mapping[str, Any] | None = None
              ) -> tuple[float, str]:
        from ..core.context import get_backward_llm

        eng = engine or get_backward_llm()
        request = _judge_request(rubric, prediction, expected,
                                 inputs if show_inputs else None, show_expected)
        reply = eng.complete(request).text
        j = read_judgement(reply or "")
        if j is None:
            return 0.0, f"{UNREADABLE}: {shorten(reply or '<empty>', 300)!r}"
        return score_judgement(j, pass_score)

    judge.__name__ = "llm_judge"
    return judge
