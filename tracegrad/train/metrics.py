"""Metrics: a score in [0, 1] and an explanation, because the explanation is the feedback.

The optimizer never sees the score alone; it sees what the metric said. So every metric
here says what was expected, what came out, and what to change, in words a model can act
on. Any callable returning a float or ``(float, str)`` is a metric too.
"""

from __future__ import annotations

import inspect
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..core.shorten import render, shorten
from ..ops.loss import normalize_metric_result
from .choice import choice
from .judge import llm_judge, parse_judgement
from .textmatch import LETTER_FORM, PUNCT, find_letter, normalize, occurs, show, text_of

__all__ = [
    "Metric",
    "choice",
    "contains",
    "exact",
    "exact_match",
    "extract",
    "get_metric",
    "json_field_match",
    "llm_judge",
    "metric_names",
    "normalize",
    "numeric",
    "parse_judgement",
    "regex",
    "token_f1",
]

Metric = Callable[..., Any]
_PUNCT = PUNCT
_text = text_of
_show = show


def _alternatives(expected: Any) -> list[Any]:
    return list(expected) if isinstance(expected, list | tuple | set) else [expected]


def _expected_desc(expected: Any) -> str:
    alts = _alternatives(expected)
    if len(alts) == 1:
        return _show(alts[0])
    return "one of " + ", ".join(_show(a) for a in alts[:8])


def exact_match(prediction: Any, expected: Any) -> tuple[float, str]:
    """1 when the answer equals the expected one, ignoring case, spacing and end punctuation.

    ``expected`` may be a list of acceptable answers.
    """
    got = normalize(prediction)
    for alt in _alternatives(expected):
        if got == normalize(alt):
            return 1.0, f"Correct: expected {_show(alt)} and got it."
    hint = ""
    for alt in _alternatives(expected):
        if normalize(alt) and normalize(alt) in got:
            hint = (
                " The expected answer appears inside the output, but the output must be "
                "exactly the answer, with nothing around it."
            )
            break
    return 0.0, f"Wrong: expected {_expected_desc(expected)}, got {_show(prediction)}.{hint}"


def exact(prediction: Any, expected: Any) -> tuple[float, str]:
    """1 only when the answer is exactly the expected text (outer whitespace aside).

    For outputs another program parses, where "Paris." or "paris" is not "Paris";
    ``exact_match`` is the forgiving one. ``expected`` may be a list of acceptable answers.
    """
    got = _text(prediction).strip()
    for alt in _alternatives(expected):
        if got == _text(alt).strip():
            return 1.0, f"Correct: expected {_show(alt)} and got it."
    hint = ""
    if any(normalize(got) == normalize(alt) for alt in _alternatives(expected)):
        hint = (" It differs only in case, spacing or punctuation, and the output must be "
                "exactly the expected text.")
    return 0.0, f"Wrong: expected exactly {_expected_desc(expected)}, got {_show(prediction)}.{hint}"


def contains(prediction: Any, expected: Any) -> tuple[float, str]:
    """1 when the expected text occurs in the answer as whole words (case and spacing ignored).

    Literal: punctuation counts ("(A)" is not in "are"), and neither a word nor a number
    may continue on either side ("1" is not in "12"). A single letter is an option label,
    so it counts only where the answer picks it ("(B)", "Answer: B", "B"), never as the
    pronoun "I" or the article "a".
    """
    for alt in _alternatives(expected):
        letter = LETTER_FORM.match(_text(alt))
        if letter:
            if find_letter(prediction)[0] == letter.group(1).upper():
                return 1.0, f"Correct: the output picks {_show(alt)}."
        elif occurs(prediction, alt):
            return 1.0, f"Correct: the output contains {_show(alt)}."
    return (
        0.0,
        f"Wrong: the output should contain {_expected_desc(expected)}, got {_show(prediction)}.",
    )


# -- numbers ----------------------------------------------------------------------------

_NUMBER = re.compile(
    r"(?<![\w.])[-+\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w])"
)


def extract_number(value: Any) -> float | None:
    """The last number in a text ("The total is $1,234.50." -> 1234.5), or None."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    text = _text(value)
    found = None
    for m in _NUMBER.finditer(text):
        s = m.group(0)
        if not any(c.isdigit() for c in s):
            continue
        s = s.replace(",", "").replace("\u2212", "-")
        if s.startswith(("e", "E")):
            continue
        try:
            found = float(s)
        except ValueError:
            continue
    return found


def _fmt(x: float) -> str:
    # abs() first: int() of inf/nan raises, and a model may well answer "1e999"
    return str(int(x)) if abs(x) < 1e15 and x == int(x) else repr(x)


def numeric(
    prediction: Any = None,
    expected: Any = None,
    *,
    tolerance: float = 1e-6,
    relative: bool = False,
) -> Any:
    """Compare the last number in the answer with the expected number.

    ``numeric(tolerance=0.01)`` returns a metric; ``numeric(prediction, expected)`` scores
    directly with the default tolerance. ``relative=True`` makes the tolerance a fraction
    of the expected value.
    """
    if prediction is None and expected is None:
        return _numeric_metric(tolerance, relative)
    return _numeric_metric(tolerance, relative)(prediction, expected)


numeric._factory = True  # type: ignore[attr-defined]


def _numeric_metric(tolerance: float, relative: bool) -> Metric:
    def numeric_match(prediction: Any, expected: Any) -> tuple[float, str]:
        want = extract_number(expected)
        if want is None:
            raise ValueError(f"numeric metric: the expected value {expected!r} holds no number")
        got = extract_number(prediction)
        if got is None:
            return 0.0, (
                f"Wrong: expected the number {_fmt(want)}, but the output contains no "
                f"number: {_show(prediction)}."
            )
        allowed = tolerance * abs(want) if relative else tolerance
        if math.isclose(got, want, rel_tol=0.0, abs_tol=allowed) or got == want:
            return 1.0, f"Correct: expected {_fmt(want)} and got {_fmt(got)}."
        return 0.0, (
            f"Wrong: expected {_fmt(want)}, got {_fmt(got)} (the last number in "
            f"{_show(prediction)})."
        )

    numeric_match.__name__ = f"numeric(tolerance={tolerance})"
    return numeric_match


def regex(pattern: str, flags: int = re.IGNORECASE) -> Metric:
    """1 when ``pattern`` is found in the answer; ``{expected}`` in it stands for the
    expected value, escaped (``regex(r"^\\s*{expected}\\s*$")``)."""
    uses_expected = "{expected}" in pattern
    if not uses_expected:
        compiled = re.compile(pattern, flags)

    def regex_match(prediction: Any, expected: Any) -> tuple[float, str]:
        pat = (
            re.compile(pattern.replace("{expected}", re.escape(_text(expected))), flags)
            if uses_expected
            else compiled
        )
        if pat.search(_text(prediction)):
            return 1.0, f"Correct: the output matches /{pat.pattern}/."
        return 0.0, (
            f"Wrong: the output should match /{shorten(pat.pattern, 200)}/ "
            f"(expected {_show(expected)}), got {_show(prediction)}."
        )

    regex_match.__name__ = f"regex({pattern!r})"
    return regex_match


def extract(pattern: str, flags: int = re.IGNORECASE) -> Metric:
    """Read the answer out of the output with ``pattern`` and compare it like exact_match.

    The answer is the first group of the first match (the whole match when the pattern
    has no group), so ``extract(r"Answer:\\s*(.+)")`` lets a reply reason first and still
    be scored on its answer line alone.
    """
    try:
        compiled = re.compile(pattern, flags)
    except re.error as e:
        raise ValueError(f"extract:REGEX has an invalid regular expression: {e}") from None

    def extract_match(prediction: Any, expected: Any) -> tuple[float, str]:
        m = compiled.search(_text(prediction))
        if m is None:
            return 0.0, (
                f"Wrong: the answer is read from the output with /{shorten(pattern, 200)}/, "
                f"which does not match {_show(prediction)} (expected {_expected_desc(expected)})."
            )
        got = m.group(1) if compiled.groups else m.group(0)
        got = "" if got is None else got
        for alt in _alternatives(expected):
            if normalize(got) == normalize(alt):
                return 1.0, f"Correct: expected {_show(alt)} and read {_show(got)}."
        return 0.0, (
            f"Wrong: expected {_expected_desc(expected)}, read {_show(got)} from "
            f"{_show(prediction)} with /{shorten(pattern, 200)}/."
        )

    extract_match.__name__ = f"extract({pattern!r})"
    return extract_match


# -- JSON ---------------------------------------------------------------------------------


def _parse_json(value: Any) -> Any:
    from ..llm.structured import extract_json

    if isinstance(value, dict | list):
        return value
    return extract_json(_text(value))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, str) and isinstance(b, str):
        return normalize(a) == normalize(b)
    if isinstance(a, str) != isinstance(b, str):
        na, nb = extract_number(a), extract_number(b)
        if (
            na is not None
            and nb is not None
            and normalize(a) == normalize(_fmt(na))
            and normalize(b) == normalize(_fmt(nb))
        ):
            return na == nb
        return normalize(render(a)) == normalize(render(b))
    return a == b


def json_field_match(
    prediction: Any = None, expected: Any = None, *, fields: Sequence[str] | None = None
) -> Any:
    """Fraction of fields whose value in the answer's JSON equals the expected one.

    The answer may wrap its JSON in fences or prose. ``fields`` defaults to every key of
    the expected object. ``json_field_match(fields=[...])`` returns a metric;
    ``json_field_match(prediction, expected)`` scores directly.
    """
    if prediction is None and expected is None:
        return _json_metric(fields)
    return _json_metric(fields)(prediction, expected)


json_field_match._factory = True  # type: ignore[attr-defined]


def _json_metric(fields: Sequence[str] | None) -> Metric:
    def json_match(prediction: Any, expected: Any) -> tuple[float, str]:
        want = _parse_json(expected)
        if not isinstance(want, dict):
            raise ValueError(
                f"json_field_match: the expected value must be a JSON object, got {expected!r}"
            )
        keys = list(fields) if fields is not None else list(want)
        try:
            got = _parse_json(prediction)
        except ValueError as e:
            return 0.0, (
                f"Wrong: the output must be a JSON object with the fields "
                f"{', '.join(keys)}, but no JSON could be read ({e}). Output: "
                f"{_show(prediction)}."
            )
        if not isinstance(got, dict):
            return 0.0, f"Wrong: the output must be a JSON object, got {_show(got)}."
        problems = []
        ok = 0
        for k in keys:
            if k not in got:
                problems.append(f"field {k!r} is missing (expected {_show(want.get(k))})")
            elif k not in want:
                problems.append(f"field {k!r} is not in the expected object")
            elif _same(got[k], want[k]):
                ok += 1
            else:
                problems.append(f"field {k!r}: expected {_show(want[k])}, got {_show(got[k])}")
        score = ok / len(keys) if keys else 1.0
        if not problems:
            return score, f"Correct: all {len(keys)} fields match."
        return score, f"{ok}/{len(keys)} fields match. " + "; ".join(problems[:10]) + "."

    json_match.__name__ = "json_field_match"
    return json_match


# -- token F1 ---------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _tokens(value: Any) -> list[str]:
    text = _text(value).lower()
    text = "".join(" " if c in _PUNCT else c for c in text)
    return _ARTICLES.sub(" ", text).split()


def token_f1(prediction: Any, expected: Any) -> tuple[float, str]:
    """SQuAD-style F1 over words (articles and punctuation ignored); best over alternatives."""
    best = (-1.0, "")
    for alt in _alternatives(expected):
        got, want = _tokens(prediction), _tokens(alt)
        if not got and not want:
            return 1.0, "Correct: both are empty."
        common = Counter(got) & Counter(want)
        same = sum(common.values())
        f1 = 0.0 if same == 0 else 2 * same / (len(got) + len(want))
        if f1 >= 1.0:
            return 1.0, f"Correct: the words match {_show(alt)}."
        missing = list((Counter(want) - Counter(got)).elements())[:15]
        extra = list((Counter(got) - Counter(want)).elements())[:15]
        parts = [f"Token F1 {f1:.2f} against {_show(alt)}."]
        if missing:
            parts.append(f"Missing words: {' '.join(missing)}.")
        if extra:
            parts.append(f"Extra words: {' '.join(extra)}.")
        if f1 > best[0]:
            best = (f1, " ".join(parts))
    return best


# -- lookup by name ---------------------------------------------------------------------

_SIMPLE: dict[str, Metric] = {
    "exact_match": exact_match,
    "em": exact_match,
    "exact": exact,
    "contains": contains,
    "choice": choice,
    "token_f1": token_f1,
    "f1": token_f1,
}


def metric_names() -> list[str]:
    return sorted(
        [
            *_SIMPLE,
            "numeric",
            "numeric:TOLERANCE",
            "regex:PATTERN",
            "extract:REGEX",
            "json_field_match",
            "json_field_match:FIELD,FIELD",
            "llm_judge:RUBRIC",
        ]
    )


def get_metric(metric: str | Metric) -> Callable[..., tuple[float, str]]:
    """A metric from a name (for the CLI and prompt files) or any callable.

    Names: exact_match, exact, contains, choice, token_f1, numeric[:TOLERANCE],
    regex:PATTERN, extract:REGEX, json_field_match[:FIELD,FIELD], llm_judge:RUBRIC. The
    result always returns ``(score, explanation)``; it takes ``inputs=`` (the example's
    inputs) and passes them on to a metric that has an ``inputs`` parameter.
    """
    if callable(metric):
        fn: Metric = metric() if getattr(metric, "_factory", False) else metric
        if getattr(fn, "_normalized", False):
            return fn  # type: ignore[return-value]
        return _normalized(fn)
    if not isinstance(metric, str):
        raise TypeError(f"a metric is a name or a callable, got {metric!r}")
    name, _, arg = metric.strip().partition(":")
    name = name.strip().lower().replace("-", "_")
    if name in _SIMPLE and not arg:
        return _normalized(_SIMPLE[name])
    if name == "numeric":
        try:
            tol = float(arg) if arg else 1e-6
        except ValueError:
            raise ValueError(f"numeric:TOLERANCE needs a number, got {arg!r}") from None
        return _normalized(numeric(tolerance=tol))
    if name == "regex" and arg:
        return _normalized(regex(arg))
    if name == "extract" and arg:
        return _normalized(extract(arg))
    if name == "json_field_match":
        fields = [f.strip() for f in arg.split(",") if f.strip()] or None
        return _normalized(json_field_match(fields=fields))
    if name == "llm_judge" and arg:
        return _normalized(llm_judge(arg))
    raise ValueError(f"unknown metric {metric!r}; known: {', '.join(metric_names())}")


def takes_inputs(fn: Any) -> bool:
    """True when a metric declares an ``inputs`` parameter: it wants the example's inputs
    (a judge grading an answer needs the question; ``choice`` reads the options)."""
    if getattr(fn, "_normalized", False):
        return bool(getattr(fn, "takes_inputs", False))
    try:
        return "inputs" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _normalized(fn: Metric) -> Callable[..., tuple[float, str]]:
    wants = takes_inputs(fn)

    def metric(prediction: Any, expected: Any, inputs: Mapping[str, Any] | None = None
               ) -> tuple[float, str]:
        result = fn(prediction, expected, inputs=inputs) if wants else fn(prediction, expected)
        return normalize_metric_result(result, prediction, expected)

    metric.__name__ = getattr(fn, "__name__", "metric")
    metric.__doc__ = getattr(fn, "__doc__", None)
    metric._normalized = True  # type: ignore[attr-defined]
    metric.takes_inputs = wants  # type: ignore[attr-defined]
    metric.wrapped = fn  # type: ignore[attr-defined]
    return metric
