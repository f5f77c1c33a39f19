"""Metrics: a score in [0, 1] and an explanation, because the explanation is the feedback.

The optimizer never sees the score alone; it sees what the metric said. So every metric
here says what was expected, what came out, and what to change, in words a model can act
on. Any callable returning a float or ``(float, str)`` is a metric too.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from ..core.shorten import render, shorten
from ..ops.loss import normalize_metric_result

__all__ = [
    "Metric",
    "contains",
    "exact_match",
    "get_metric",
    "json_field_match",
    "llm_judge",
    "metric_names",
    "numeric",
    "regex",
    "token_f1",
]

Metric = Callable[[Any, Any], Any]
_SHOW = 300
_PUNCT = string.punctuation + "\u201c\u201d\u2018\u2019\u00bf\u00a1\u2026"


def _text(value: Any) -> str:
    from ..core.variable import Variable

    if isinstance(value, Variable):
        value = value.value
    return render(value)


def normalize(text: Any) -> str:
    """Lower case, one space between words, no punctuation at either end."""
    t = " ".join(_text(text).lower().split())
    prev = None
    while t != prev:
        prev = t
        t = t.strip(_PUNCT).strip()
    return t


def _show(value: Any) -> str:
    return repr(shorten(_text(value), _SHOW))


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


def contains(prediction: Any, expected: Any) -> tuple[float, str]:
    """1 when the expected text occurs in the answer (case and spacing ignored)."""
    got = " ".join(_text(prediction).lower().split())
    for alt in _alternatives(expected):
        want = normalize(alt)
        if want and want in got:
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


# -- LLM judge --------------------------------------------------------------------------


_SCORE_PATTERNS = [
    re.compile(r"\bscore\W{0,3}\s*(?:is\s*)?[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*10\b)?", re.I),
    re.compile(r"(-?\d+(?:\.\d+)?)\s*/\s*10\b"),
    re.compile(r"(-?\d+(?:\.\d+)?)\s+out\s+of\s+10\b", re.I),
]
_REASON = re.compile(r"\breason(?:ing)?\W{0,3}\s*[:=]\s*(.+)", re.I | re.S)


def parse_judgement(text: str) -> tuple[float, str] | None:
    """(score 0-10, reason) from a judge reply in JSON, "Score: 7", "7/10" form; else None."""
    try:
        data = _parse_json(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        lowered = {str(k).lower(): v for k, v in data.items()}
        raw = lowered.get("score", lowered.get("rating", lowered.get("grade")))
        try:
            score = float(raw) if raw is not None and not isinstance(raw, bool) else None
        except (TypeError, ValueError):
            score = None
        if score is not None and score == score:
            reason = (
                lowered.get("reason") or lowered.get("explanation") or lowered.get("feedback") or ""
            )
            return score, str(reason).strip()
    for pat in _SCORE_PATTERNS:
        m = pat.search(text)
        if m:
            score = float(m.group(1))
            r = _REASON.search(text)
            reason = r.group(1).strip() if r else _reason_around(text, m)
            return score, reason
    stripped = text.strip().strip("*.").strip()
    if re.fullmatch(r"-?\d+(?:\.\d+)?", stripped):
        return float(stripped), ""
    return None


def _reason_around(text: str, m: re.Match[str]) -> str:
    rest = (text[: m.start()] + " " + text[m.end() :]).strip()
    return " ".join(rest.split())


def _judge_prompt() -> str:
    from .. import prompts

    return prompts.load("metric_judge")


def llm_judge(rubric: str, engine: Any = None, *, show_expected: bool = True) -> Metric:
    """A metric that asks a model to grade the answer 0-10 against ``rubric``.

    ``engine`` defaults to the backward engine (``tg.set_backward_llm``). Calls are made
    with purpose "judge" so they are metered apart from forward calls. A reply without a
    readable score counts 0, and the explanation says so, rather than failing the run.
    """

    def judge(prediction: Any, expected: Any) -> tuple[float, str]:
        from ..core.context import get_backward_llm
        from ..llm.base import Request

        eng = engine or get_backward_llm()
        user = f"Rubric:\n{rubric}\n\nAnswer to grade:\n<answer>\n{shorten(_text(prediction), 6000)}\n</answer>"
        if show_expected and expected is not None and _text(expected).strip():
            user += f"\n\nReference answer:\n<reference>\n{shorten(_text(expected), 3000)}\n</reference>"
        request = Request(
            messages=[
                {"role": "system", "content": _judge_prompt()},
                {"role": "user", "content": user},
            ],
            purpose="judge",
        )
        reply = eng.complete(request).text
        parsed = parse_judgement(reply or "")
        if parsed is None:
            return 0.0, (
                f"The judge's reply had no readable score (counted as 0): "
                f"{shorten(reply or '<empty>', 300)!r}"
            )
        score, reason = parsed
        score = min(10.0, max(0.0, score))
        return score / 10.0, f"Judge score {score:g}/10. {reason}".strip()

    judge.__name__ = "llm_judge"
    return judge


# -- lookup by name ---------------------------------------------------------------------

_SIMPLE: dict[str, Metric] = {
    "exact_match": exact_match,
    "exact": exact_match,
    "em": exact_match,
    "contains": contains,
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
            "json_field_match",
            "json_field_match:FIELD,FIELD",
            "llm_judge:RUBRIC",
        ]
    )


def get_metric(metric: str | Metric) -> Callable[[Any, Any], tuple[float, str]]:
    """A metric from a name (for the CLI and prompt files) or any callable.

    Names: exact_match, contains, token_f1, numeric[:TOLERANCE], regex:PATTERN,
    json_field_match[:FIELD,FIELD], llm_judge:RUBRIC. The result always returns
    ``(score, explanation)``.
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
    if name == "json_field_match":
        fields = [f.strip() for f in arg.split(",") if f.strip()] or None
        return _normalized(json_field_match(fields=fields))
    if name == "llm_judge" and arg:
        return _normalized(llm_judge(arg))
    raise ValueError(f"unknown metric {metric!r}; known: {', '.join(metric_names())}")


def _normalized(fn: Metric) -> Callable[[Any, Any], tuple[float, str]]:
    def metric(prediction: Any, expected: Any) -> tuple[float, str]:
        return normalize_metric_result(fn(prediction, expected), prediction, expected)

    metric.__name__ = getattr(fn, "__name__", "metric")
    metric.__doc__ = getattr(fn, "__doc__", None)
    metric._normalized = True  # type: ignore[attr-defined]
    metric.wrapped = fn  # type: ignore[attr-defined]
    return metric
