"""The ``choice`` metric: which option did the reply pick, and is it the expected one?

A multiple-choice reply names its pick by letter ("(B)", "Answer: B"), by label or by the
option's text, and a substring test cannot tell "(B)" from "(A) or (B)". This metric
finds the one option the reply picked and scores it; a reply that names several without
saying which is its answer scores 0, and the explanation says so, because that is the
thing the prompt must fix.

The options come from the example: an ``options``/``choices`` input (a list, or a mapping
label -> text), ``(A) text`` lines in an input, or a BIG-bench ``target_scores`` mapping
given as the expected value (option text -> score, labelled A, B, ... in order).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .textmatch import LETTER_FORM, find_letter, normalize, occurs, show, text_of

__all__ = ["choice", "options_from_inputs"]

_LETTERS = string.ascii_uppercase
_OPTION_LINE = re.compile(r"^\s*[(\[]?([A-Z])[)\].:]\s*(\S.*?)\s*$", re.M)
_OPTION_INLINE = re.compile(r"[(\[]([A-Z])[)\]]\s*([^()\[\]\n]+?)\s*(?=[(\[][A-Z][)\]]|\n|$)")
_OPTION_FIELDS = ("options", "choices", "answers", "answer_choices")


@dataclass
class _Want:
    """What counts as right: a score per option label, or texts when there are no options."""

    scores: dict[str, float] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)


def _in_order(found: list[tuple[str, str]]) -> dict[str, str]:
    """Options read from text count only as a run A, B, C, ... of at least two."""
    options: dict[str, str] = {}
    for letter, text in found:
        if letter in options:  # a second list (or a repeat) ends the first
            break
        if len(options) < len(_LETTERS) and letter == _LETTERS[len(options)]:
            options[letter] = text.strip()
    return options if len(options) >= 2 else {}


def options_from_inputs(inputs: Mapping[str, Any] | None) -> dict[str, str]:
    """label -> option text from an example's inputs, or {} when they list no options."""
    if not inputs:
        return {}
    for key, value in inputs.items():
        if str(key).lower() in _OPTION_FIELDS:
            if isinstance(value, Mapping):
                return {str(k).strip().upper(): text_of(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return {_LETTERS[i]: text_of(v) for i, v in enumerate(value[: len(_LETTERS)])}
    for value in inputs.values():
        if isinstance(value, str):
            found = _in_order(_OPTION_LINE.findall(value)) \
                or _in_order(_OPTION_INLINE.findall(value))
            if found:
                return found
    return {}


def _target_scores(expected: Any) -> dict[str, float] | None:
    if not isinstance(expected, Mapping):
        return None
    scores = expected.get("target_scores", expected)
    if isinstance(scores, Mapping) and scores and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in scores.values()):
        return {str(k): float(v) for k, v in scores.items()}
    raise ValueError(f"choice: an expected mapping must be target_scores (option -> score), "
                     f"got {expected!r}")


def _label_of(text: str, options: dict[str, str]) -> str | None:
    """The label of the option whose text is ``text``, or the letter ``text`` names."""
    m = LETTER_FORM.match(text)
    if m and (not options or m.group(1).upper() in options):
        return m.group(1).upper()
    for label, option in options.items():
        if normalize(option) == normalize(text) or normalize(label) == normalize(text):
            return label
    lead = re.match(r"^\s*[(\[]([A-Za-z])[)\]]", text)  # "(B) Paris"
    return lead.group(1).upper() if lead and lead.group(1).upper() in options else None


def _want(expected: Any, options: dict[str, str]) -> tuple[_Want, dict[str, str]]:
    """What is right, and the options (target_scores may bring their own)."""
    scores = _target_scores(expected)
    if scores is not None:
        labels = {k: _label_of(k, options) for k in scores} if options else {}
        if not options or None in labels.values():
            options = {_LETTERS[i]: k for i, k in enumerate(list(scores)[: len(_LETTERS)])}
            labels = {k: lab for lab, k in options.items()}
        return _Want({labels[k]: min(1.0, max(0.0, v)) for k, v in scores.items()
                      if labels.get(k)}), options
    want = _Want()
    alts = list(expected) if isinstance(expected, list | tuple | set) else [expected]
    for alt in alts:
        label = _label_of(text_of(alt), options)
        if label:
            want.scores[label] = 1.0
        else:
            want.texts.append(text_of(alt))
    return want, options


def _by_text(reply: str, options: dict[str, str]) -> list[str]:
    """Labels of the options whose text the reply names (not counting an option named
    only as part of a longer one: "dark red" is not also "red")."""
    hits = [lab for lab, text in options.items() if text and occurs(reply, text)]
    return [lab for lab in hits if not any(
        o != lab and occurs(options[o], options[lab]) and len(options[o]) > len(options[lab])
        for o in hits)]


def _pick(reply: str, options: dict[str, str]) -> tuple[str | None, list[str]]:
    letter, named = find_letter(reply, list(options) if options else None)
    if letter or named:
        return letter, named
    hits = _by_text(reply, options)
    return (hits[0] if len(hits) == 1 else None), hits


def _describe(label: str, options: dict[str, str]) -> str:
    text = options.get(label)
    return f"({label}) {show(text)}" if text else f"({label})"


def choice(prediction: Any, expected: Any, inputs: Mapping[str, Any] | None = None
           ) -> tuple[float, str]:
    """1 when the option the reply picked is the expected one (see the module doc).

    ``expected`` is a letter ("B", "(B)"), an option's label or text, a list of
    acceptable ones, or a ``target_scores`` mapping (the score of the picked option).
    """
    want, options = _want(expected, options_from_inputs(inputs))
    reply = text_of(prediction)
    picked, named = _pick(reply, options)
    if picked is None and want.texts and not want.scores:
        hit = next((t for t in want.texts if occurs(reply, t)), None)
        if hit is not None and not named:  # no options known: the answer's text counts
            return 1.0, f"Correct: the reply picks {show(hit)}."
    best = max(want.scores.values(), default=0.0)
    right = " or ".join([*(_describe(lab, options) for lab, s in want.scores.items()
                           if s > 0 and s == best),
                         *(show(t) for t in want.texts)]) or "no option (no option scores)"
    if picked is None:
        if len(named) > 1:
            names = ", ".join(_describe(lab, options) for lab in named)
            return 0.0, (f"Wrong: the reply names several options ({names}) without saying "
                         f"which one is its answer; expected {right}. The reply must end "
                         f"with exactly one option.")
        return 0.0, f"Wrong: the reply picks no option; expected {right}, got {show(reply)}."
    score = want.scores.get(picked, 0.0)
    if score >= 1.0:
        return 1.0, f"Correct: the reply picks {_describe(picked, options)}."
    credit = f" (worth {score:g})" if score > 0 else ""
    return score, f"Wrong: expected {right}, the reply picks {_describe(picked, options)}{credit}."
