"""Reading an answer out of a reply: the text rules the metrics share.

A metric that finds ``'a'`` inside ``'are'`` or ``'1'`` inside ``'12'`` gives the optimizer
a score that means nothing, so every match here is literal and respects word and number
boundaries, and a lone letter is read only where it stands as an option label.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Any

from ..core.shorten import render, shorten

PUNCT = string.punctuation + "\u201c\u201d\u2018\u2019\u00bf\u00a1\u2026"
SHOW = 300


def text_of(value: Any) -> str:
    from ..core.variable import Variable

    if isinstance(value, Variable):
        value = value.value
    return render(value)


def show(value: Any) -> str:
    return repr(shorten(text_of(value), SHOW))


def normalize(text: Any) -> str:
    """Lower case, one space between words, no punctuation at either end."""
    t = " ".join(text_of(text).lower().split())
    prev = None
    while t != prev:
        prev = t
        t = t.strip(PUNCT).strip()
    return t


def squash(text: Any) -> str:
    """Lower case with one space between words; punctuation kept (it may be the answer)."""
    return " ".join(text_of(text).lower().split())


def _boundary_pattern(needle: str) -> re.Pattern[str]:
    """``needle`` literally, not glued to a word or number on either side.

    A side that is punctuation needs no boundary: ``'(A)'`` is its own delimiter. A side
    that is a digit must not continue a number either (``'12'`` is not in ``'12.5'``).
    """
    left = right = ""
    if needle[0].isalnum() or needle[0] == "_":
        left = r"(?<!\w)" + (r"(?<!\d[.,])" if needle[0].isdigit() else "")
    if needle[-1].isalnum() or needle[-1] == "_":
        right = r"(?!\w)" + (r"(?![.,]\d)" if needle[-1].isdigit() else "")
    return re.compile(left + re.escape(needle) + right)


def occurs(haystack: Any, needle: Any) -> bool:
    """True when ``needle`` occurs in ``haystack`` as whole words (case and spacing ignored).

    Sentence punctuation ending the needle ("Paris.") is not required in the haystack,
    because datasets often store answers as sentences.
    """
    hay, want = squash(haystack), squash(needle)
    if not want:
        return False
    if _boundary_pattern(want).search(hay):
        return True
    core = want.rstrip(".!?;:,")
    return bool(core) and core != want and core[-1].isalnum() and bool(
        _boundary_pattern(core).search(hay))


# -- option letters ------------------------------------------------------------------

_MARKER = (r"\b(?:answer|choice|option|pick|select(?:ed|ion)?)s?\b"
           r"(?:\s+(?:is|would\s+be|will\s+be))?\s*[:=\-]?\s*\**\s*")
# after a marker: "(b)", an upper-case letter, or a lower-case one that ends the phrase
# ("answer: b."), never the article in "the answer is a dog"
_AFTER_MARKER = re.compile(
    _MARKER + r"(?:[(\[]([a-z])[)\]]|((?-i:[A-Z]))(?!\w)|([a-z])(?=\s*(?:[.,;:!)*]|$)))",
    re.I | re.M,
)
_WHOLE = re.compile(r"^\W*[(\[]?([a-z])[)\]]?\W*$", re.I)
_LEADING = re.compile(r"^\W*?[(\[]?([A-Z])[)\].:](?:\s|$)")
_PAREN = re.compile(r"[(\[]([a-z])[)\]]", re.I)
LETTER_FORM = re.compile(r"^\s*[(\[]?([a-z])[)\]]?[.:]?\s*$", re.I)


def _marked(text: str, ok: Callable[[str | None], str | None]) -> str | None:
    """The letter of the last "answer is X" in the reply (the final answer after reasoning)."""
    found = None
    for m in _AFTER_MARKER.finditer(text):
        found = ok(m.group(1) or m.group(2) or m.group(3)) or found
    return found


def find_letter(text: Any, labels: list[str] | None = None) -> tuple[str | None, list[str]]:
    """(the option letter a reply picked, the letters it names) -- the pick is None when it
    names none, or several without saying which one is the answer.

    Read, strongest first: the last "answer is (B)" / "Answer: B"; a reply that is only a
    letter; a reply that starts with "B." or "(B)"; the one letter in parentheses.
    ``labels`` restricts the letters to the options that exist.
    """
    t = text_of(text).strip()
    allowed = {lab.upper() for lab in labels} if labels else None

    def ok(letter: str | None) -> str | None:
        return letter.upper() if letter and (allowed is None or letter.upper() in allowed) else None

    named = sorted({m.upper() for m in _PAREN.findall(t) if ok(m)})
    found = _marked(t, ok) or ok(_whole(t))
    if found:
        return found, sorted({*named, found})
    lead = ok(_leading(t))
    if lead and set(named) <= {lead}:  # "(A) or (B)" starts with a label but picks none
        return lead, [lead]
    if len(named) == 1:
        return named[0], named
    return None, named


def _whole(text: str) -> str | None:
    m = _WHOLE.match(text)
    return m.group(1).upper() if m else None


def _leading(text: str) -> str | None:
    m = _LEADING.match(text)
    return m.group(1) if m else None
