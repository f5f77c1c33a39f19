"""The per-example table of an evaluation: what ``tracegrad eval -o`` writes and the run
report shows.

One row per example: its inputs, the prompt the model was sent, the output, the expected
value, the score and the metric's explanation. A score alone says *that* a prompt fails;
the rows say *why*, which is what a user reads before editing a prompt or trusting an
optimized one. Rows quote model output, so they are scrubbed of secrets before they are
written, and HTML is escaped (an output may be ``<script>``).
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.shorten import render
from ..fileio import atomic_write
from ..redaction import scrub
from .judge import UNREADABLE
from .results import Outcome

__all__ = ["EXAMPLES", "FORMATS", "example_rows", "examples_table_html", "export_format",
           "messages_text", "save_best_examples", "summarize", "write_examples"]

EXAMPLES = "examples.json"  # in a run directory: the best candidate's per-example table
FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".html": "html", ".htm": "html"}
COLUMNS = ("id", "source", "inputs", "prompt", "output", "expected", "score", "explanation",
           "error")

PromptFn = Callable[[Mapping[str, Any]], Any]


def export_format(path: str | os.PathLike[str]) -> str:
    """The format of an export path by its extension; raises ValueError for any other, so
    the mistake is caught before a single call is paid for."""
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        known = ", ".join(sorted(set(FORMATS) - {".htm"}))
        raise ValueError(f"{path}: unknown extension '{ext or '(none)'}' for the results "
                         f"(use {known})")
    return FORMATS[ext]


def messages_text(messages: Any) -> str:
    """Chat messages as one readable text: ``[system] ...`` then ``[user] ...``."""
    if isinstance(messages, str):
        return messages
    parts = []
    for m in messages or []:
        content = m.get("content")
        text = content if isinstance(content, str) else render(content)
        parts.append(f"[{m.get('role', '?')}] {text}")
    return "\n\n".join(parts)


def _prompt(prompt_of: PromptFn | None, inputs: Mapping[str, Any]) -> str | None:
    if prompt_of is None:
        return None
    try:
        return messages_text(prompt_of(inputs))
    except Exception as e:  # noqa: BLE001 - a row without its prompt is still a row
        return f"<could not render the prompt: {type(e).__name__}: {e}>"


def example_rows(outcomes: Iterable[Outcome], prompt_of: PromptFn | None = None
                 ) -> list[dict[str, Any]]:
    """One row per outcome; ``prompt_of(inputs)`` gives the rendered prompt (text or
    messages), e.g. a prompt file program's ``rendered_messages``."""
    rows = []
    for o in outcomes:
        ex = o.example
        rows.append({
            "id": ex.id, "source": ex.source, "inputs": dict(ex.inputs),
            "prompt": _prompt(prompt_of, ex.inputs), "output": o.output,
            "expected": ex.expected, "score": o.score, "explanation": o.explanation,
            "error": o.error,
        })
    return scrub(rows)


def summarize(rows: Sequence[Mapping[str, Any]], usage: Mapping[str, Any] | None = None
              ) -> dict[str, Any]:
    """Counts a reader checks before trusting a score: failures, crashes, judge replies
    with no readable score (each counted 0) and replies cut at the token limit."""
    by_purpose = (usage or {}).get("by_purpose") or {}

    def cut(purpose: str) -> int:
        return int((by_purpose.get(purpose) or {}).get("cut_replies", 0) or 0)

    n = len(rows)
    return {
        "n": n,
        "score": sum(float(r["score"]) for r in rows) / n if n else 0.0,
        "failures": sum(1 for r in rows if float(r["score"]) < 1.0),
        "errors": sum(1 for r in rows if r.get("error")),
        "judge_unreadable": sum(1 for r in rows
                                if str(r.get("explanation") or "").startswith(UNREADABLE)),
        "truncated_replies": cut("forward"),
        "truncated_judge_replies": cut("judge"),
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                           default=str)


def _csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([_cell(r.get(c)) if c != "score" else f"{float(r['score']):g}"
                    for c in COLUMNS])
    return buf.getvalue()


def _e(value: Any) -> str:
    return html.escape(_cell(value), quote=True)


def examples_table_html(rows: Sequence[Mapping[str, Any]], limit: int | None = None) -> str:
    """The rows as an escaped HTML table, failures first (the ones a reader looks for)."""
    if not rows:
        return "<p>No per-example results were recorded.</p>"
    ordered = sorted(rows, key=lambda r: float(r["score"]))
    shown = ordered[:limit] if limit is not None else ordered
    head = "".join(f"<th>{c}</th>" for c in COLUMNS if c != "source")
    body = []
    for r in shown:
        cls = "fail" if float(r["score"]) < 1.0 else "pass"
        cells = []
        for c in COLUMNS:
            if c == "source":
                continue
            v = f"{float(r['score']):.3f}" if c == "score" else _cell(r.get(c))
            cells.append(f"<td><pre>{html.escape(v, quote=True)}</pre></td>")
        body.append(f'<tr class="{cls}">{"".join(cells)}</tr>')
    more = (f"<p>{len(ordered) - len(shown)} more rows not shown.</p>"
            if len(shown) < len(ordered) else "")
    return (f'<table class="examples"><thead><tr>{head}</tr></thead><tbody>'
            f'{"".join(body)}</tbody></table>{more}')


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px;vertical-align:top;text-align:left}}
pre{{white-space:pre-wrap;max-width:40em;margin:0}}tr.fail{{background:#fff2f2}}</style>
</head><body><h1>{title}</h1><ul>{summary}</ul>{table}</body></html>
"""


def _html(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], title: str) -> str:
    items = "".join(f"<li>{_e(k)}: {_e(v)}</li>" for k, v in summary.items())
    return _PAGE.format(title=_e(title), summary=items, table=examples_table_html(rows))


def write_examples(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]],
                   summary: Mapping[str, Any] | None = None, title: str = "tracegrad eval"
                   ) -> None:
    """Write the rows as JSONL (one object per row), CSV or HTML, by the extension,
    atomically: a reader never sees half a file, and a failed write keeps the old one."""
    fmt = export_format(path)
    rows = scrub(list(rows))
    if fmt == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
    elif fmt == "csv":
        text = _csv(rows)
    else:
        text = _html(rows, scrub(dict(summary or summarize(rows))), title)
    atomic_write(path, text)


def save_best_examples(rd: Any, outcomes: Mapping[tuple[str, str, str], Outcome],
                       best: Mapping[str, Any], split: str, data: Any, program: Any) -> None:
    """The best candidate's rows as ``examples.json`` in the run directory ``rd``, for the
    report: the outputs and explanations behind its score, not just the score.

    ``outcomes`` are the run's scored outcomes by (state hash, split, example id); the
    program's parameters must hold the best values (its prompt is rendered from them).
    """
    if rd is None or data is None:
        return
    found = (outcomes.get((best["hash"], split, ex.id)) for ex in data)
    kept = [o for o in found if o is not None]
    if not kept:  # e.g. resumed: the best was scored before this process started
        return
    prompt_of = getattr(program, "rendered_messages", None)
    rows = example_rows(kept, prompt_of if callable(prompt_of) else None)
    try:
        rd.write_json(EXAMPLES, {"candidate": best["id"], "split": split,
                                 "summary": summarize(rows), "rows": rows})
    except OSError as e:  # the run itself is saved apart; say what is missing
        warnings.warn(f"could not write {EXAMPLES} in {rd.path}: {e}", stacklevel=2)
