"""``report.html``: one self-contained page that explains what a run did.

The page is meant to be mailed, attached to an issue or opened from a CI artifact, so it
uses no network, no CDN and no JavaScript: charts are inline SVG, the parameter diffs are
pre-rendered, collapsible parts use ``<details>``. Every value from the run is
HTML-escaped (prompts are model-written text and may contain markup) and scrubbed of
credentials once more, even though the run files already are.
"""

from __future__ import annotations

import difflib
import html
import json
import math
import os
from pathlib import Path
from typing import Any

from ..core.shorten import render
from ..redaction import scrub_text
from .runs import REPORT, atomic_write_text, collect_secrets, load_run, scrub

__all__ = ["render_report", "write_report"]


def write_report(
    run_dir: str | os.PathLike[str], path: str | os.PathLike[str] | None = None
) -> Path:
    """Write ``report.html`` for a run directory (or to ``path``); returns where it went."""
    out = Path(path) if path is not None else Path(run_dir) / REPORT
    # the page once more as a whole: the diffs and charts are built from the values
    atomic_write_text(out, scrub_text(render_report(run_dir)))
    return out


def render_report(run_dir: str | os.PathLike[str]) -> str:
    run = load_run(run_dir)
    secrets = collect_secrets()
    config = scrub(run.config, secrets)
    history = scrub(run.history, secrets)
    best = scrub(run.best, secrets)
    state = scrub(run.state, secrets)
    graph_path = Path(run_dir) / "graph.json"
    graph = None
    if graph_path.exists():
        try:
            graph = scrub(json.loads(graph_path.read_text(encoding="utf-8")), secrets)
        except (OSError, json.JSONDecodeError):
            graph = None
    title = f"tracegrad run: {Path(run_dir).resolve().name}"
    body = [
        f"<h1>{_e(title)}</h1>",
        _summary(config, history, best, state),
        "<h2>Scores per step</h2>",
        _score_chart(history, state, best),
        "<h2>Cost per step</h2>",
        _cost_chart(history),
        "<h2>Steps</h2>",
        _steps_table(history),
        "<h2>Examples: the best candidate, per example</h2>",
        _examples(Path(run_dir), secrets),
        "<h2>Accepted versions of each parameter</h2>",
        _versions(config, history, best),
        "<h2>Pipeline graph</h2>",
        _graph(graph),
        "<h2>Configuration</h2>",
        f"<details><summary>config.json</summary><pre>{_e(json.dumps(config, indent=2, ensure_ascii=False))}</pre></details>",
    ]
    return _PAGE.format(title=_e(title), css=_CSS, body="\n".join(body))


def _examples(run_dir: Path, secrets: list[str]) -> str:
    """The best candidate's rows (inputs, prompt, output, expected, score, why), failures
    first; written by the trainer as examples.json."""
    from .examples import EXAMPLES, examples_table_html

    try:
        data = scrub(json.loads((run_dir / EXAMPLES).read_text(encoding="utf-8")), secrets)
    except (OSError, json.JSONDecodeError):
        return "<p>No per-example results were recorded for this run.</p>"
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        return "<p>No per-example results were recorded for this run.</p>"
    s = data.get("summary") or {}
    head = (f"<p>candidate {_e(data.get('candidate', '?'))} on {_e(data.get('split', '?'))}: "
            f"{_e(s.get('n', len(data['rows'])))} examples, {_e(s.get('failures', '?'))} not "
            f"fully correct, {_e(s.get('judge_unreadable', 0))} unreadable judge replies</p>")
    return head + examples_table_html(data["rows"], limit=200)


def _e(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else render(value), quote=True)


def _fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return "–"
    return f"{x:.{digits}f}"


# -- summary ---------------------------------------------------------------------------------


def _summary(
    config: dict[str, Any],
    history: list[dict[str, Any]],
    best: dict[str, Any],
    state: dict[str, Any],
) -> str:
    usage_doc = state.get("usage") or (history[-1].get("usage_total") if history else None) or {}
    usage = usage_doc.get("total") or {} if usage_doc.get("metered", True) else {}
    accepted = sum(1 for r in history if r.get("accepted"))
    reverted = sum(1 for r in history if r.get("reverted"))
    rejected = sum(1 for r in history if r.get("result") == "rejected")
    opt = config.get("optimizer") or {}
    models = sorted(
        {
            e.get("model")
            for e in (config.get("engines") or {}).get("program") or []
            if isinstance(e, dict) and e.get("model")
        }
    )
    opt_model = (
        (opt.get("engine") or {}).get("model") if isinstance(opt.get("engine"), dict) else None
    )
    datasets = config.get("datasets") or {}
    items = [
        ("Stopped", state.get("stopped_reason") or ("running" if history else "not started")),
        ("Steps done", f"{state.get('step', len(history))} of {config.get('steps', '?')}"),
        ("Baseline score", _fmt(best.get("baseline_score"))),
        (
            "Best score",
            f"{_fmt(best.get('score'))} ({best.get('id', '–')}, step {best.get('step', '–')})",
        ),
        ("Accepted / reverted / rejected", f"{accepted} / {reverted} / {rejected}"),
        ("LLM calls", str(usage.get("calls", "–"))),
        ("Tokens", str(usage.get("total_tokens", "–"))),
        ("Cost", f"${usage['usd']:.4f}" if isinstance(usage.get("usd"), int | float) else "–"),
        (
            "Elapsed",
            f"{state['elapsed_s']:.1f} s"
            if isinstance(state.get("elapsed_s"), int | float)
            else "–",
        ),
        ("Optimizer", f"{opt.get('name', '–')} ({opt.get('class', '')})"),
        ("Models", ", ".join(models) or "–"),
        ("Optimizer model", opt_model or "–"),
        ("Metric", config.get("metric", "–")),
        ("Gate", config.get("gate", "–")),
        ("Train data", _dataset(datasets.get("train"))),
        ("Validation data", _dataset(datasets.get("val"))),
    ]
    cells = "".join(
        f"<div class='card'><div class='k'>{_e(k)}</div><div class='v'>{_e(v)}</div></div>"
        for k, v in items
    )
    return f"<div class='cards'>{cells}</div>"


def _dataset(d: Any) -> str:
    if not isinstance(d, dict):
        return "–"
    where = d.get("path") or "in memory"
    sha = (d.get("sha256") or "")[:12]
    return f"{where} ({d.get('size', '?')} examples{', sha256 ' + sha if sha else ''})"


# -- charts ----------------------------------------------------------------------------------

_W, _H, _PAD_L, _PAD_R, _PAD_T, _PAD_B = 780, 280, 72, 150, 16, 36


def _axes(
    n_steps: int, y_max: float, y_label: str, y_fmt: str = "{:.2f}"
) -> tuple[list[str], Any, Any]:
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B
    x_span = max(n_steps, 1) + 0.5  # room for the last step's marker or bar

    def X(step: float) -> float:  # noqa: N802 - coordinate transform
        return _PAD_L + plot_w * step / x_span

    def Y(v: float) -> float:  # noqa: N802
        return _PAD_T + plot_h * (1 - (v / y_max if y_max else 0))

    parts = [f"<rect x='{_PAD_L}' y='{_PAD_T}' width='{plot_w}' height='{plot_h}' class='plot'/>"]
    for i in range(5):
        v = y_max * i / 4
        y = Y(v)
        parts.append(
            f"<line x1='{_PAD_L}' y1='{y:.1f}' x2='{_PAD_L + plot_w}' y2='{y:.1f}' class='grid'/>"
        )
        parts.append(
            f"<text x='{_PAD_L - 6}' y='{y + 4:.1f}' class='tick' text-anchor='end'>{_e(y_fmt.format(v))}</text>"
        )
    every = max(1, (n_steps + 1) // 15)
    for s in range(0, n_steps + 1, every):
        parts.append(
            f"<text x='{X(s):.1f}' y='{_H - _PAD_B + 16}' class='tick' text-anchor='middle'>{s}</text>"
        )
    parts.append(
        f"<text x='{_PAD_L + plot_w / 2:.1f}' y='{_H - 4}' class='axis' text-anchor='middle'>step</text>"
    )
    parts.append(
        f"<text x='14' y='{_PAD_T + plot_h / 2:.1f}' class='axis' text-anchor='middle' "
        f"transform='rotate(-90 14 {_PAD_T + plot_h / 2:.1f})'>{_e(y_label)}</text>"
    )
    return parts, X, Y


def _legend(entries: list[tuple[str, str]]) -> str:
    x0 = _W - _PAD_R + 14
    out = []
    for i, (label, swatch) in enumerate(entries):
        y = _PAD_T + 14 + i * 20
        out.append(swatch.format(x=x0, y=y))
        out.append(f"<text x='{x0 + 22}' y='{y + 4}' class='legend'>{_e(label)}</text>")
    return "".join(out)


def _svg(parts: list[str], label: str) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {_W} {_H}' width='{_W}' "
        f"height='{_H}' role='img' aria-label='{_e(label)}'>{''.join(parts)}</svg>"
    )


def _score_chart(history: list[dict[str, Any]], state: dict[str, Any], best: dict[str, Any]) -> str:
    if not history:
        return "<p class='muted'>No step has finished yet.</p>"
    n = max(int(r.get("step", 0)) for r in history)
    parts, X, Y = _axes(n, 1.0, "score")
    baseline = best.get("baseline_score")
    if baseline is None:
        baseline = (state.get("baseline") or {}).get("score")
    # best-so-far line (what the gate kept)
    best_pts = [(0, baseline)] if isinstance(baseline, int | float) else []
    best_pts += [
        (r["step"], r["best_score"])
        for r in history
        if isinstance(r.get("best_score"), int | float)
    ]
    if best_pts:
        d = " ".join(
            f"{'M' if i == 0 else 'L'}{X(s):.1f},{Y(v):.1f}" for i, (s, v) in enumerate(best_pts)
        )
        parts.append(f"<path d='{d}' class='best'/>")
    train_pts = [
        (r["step"], r["train_score"])
        for r in history
        if isinstance(r.get("train_score"), int | float)
    ]
    if train_pts:
        d = " ".join(
            f"{'M' if i == 0 else 'L'}{X(s):.1f},{Y(v):.1f}" for i, (s, v) in enumerate(train_pts)
        )
        parts.append(f"<path d='{d}' class='train'/>")
        for s, v in train_pts:
            parts.append(f"<circle cx='{X(s):.1f}' cy='{Y(v):.1f}' r='2.5' class='trainpt'/>")
    for r in history:
        v = r.get("val_score")
        if not isinstance(v, int | float):
            v = r.get("candidate_train_score") if r.get("val_score") is None else None
        if not isinstance(v, int | float):
            continue
        cls = "acc" if r.get("accepted") else "rej"
        tip = f"step {r['step']}: candidate {v:.3f} ({'accepted' if r.get('accepted') else 'reverted'})"
        parts.append(
            f"<circle cx='{X(r['step']):.1f}' cy='{Y(v):.1f}' r='5' class='{cls}'>"
            f"<title>{_e(tip)}</title></circle>"
        )
    if isinstance(baseline, int | float):
        parts.append(
            f"<circle cx='{X(0):.1f}' cy='{Y(baseline):.1f}' r='5' class='base'>"
            f"<title>baseline {baseline:.3f}</title></circle>"
        )
    parts.append(
        _legend(
            [
                ("best so far", "<rect x='{x}' y='{y}' width='16' height='3' class='bestsw'/>"),
                (
                    "train minibatch",
                    "<rect x='{x}' y='{y}' width='16' height='2' class='trainsw'/>",
                ),
                (
                    "candidate kept",
                    "<circle cx='{x}' cy='{y}' r='5' class='acc' transform='translate(8,1)'/>",
                ),
                (
                    "candidate reverted",
                    "<circle cx='{x}' cy='{y}' r='5' class='rej' transform='translate(8,1)'/>",
                ),
                (
                    "baseline",
                    "<circle cx='{x}' cy='{y}' r='5' class='base' transform='translate(8,1)'/>",
                ),
            ]
        )
    )
    return _svg(parts, "validation and train score per step")


def _cost_chart(history: list[dict[str, Any]]) -> str:
    if not history:
        return "<p class='muted'>No step has finished yet.</p>"
    usd = [((r.get("usage") or {}).get("total") or {}).get("usd") or 0.0 for r in history]
    calls = [((r.get("usage") or {}).get("total") or {}).get("calls") or 0 for r in history]
    if any(usd):
        values, label, fmt = usd, "USD", "${:.4f}"
    elif any(calls):
        values, label, fmt = calls, "LLM calls", "{:.0f}"
    else:
        values = [sum((r.get("calls") or {}).values()) for r in history]
        label, fmt = "optimizer + backward calls", "{:.0f}"
        if not any(values):
            return "<p class='muted'>No usage was metered in this run.</p>"
    n = max(int(r.get("step", 0)) for r in history)
    top = (max(values) or 1) * 1.1
    if label != "USD":  # whole numbers: make the four grid steps whole too
        top = max(4, math.ceil(top / 4) * 4)
    parts, X, Y = _axes(n, top, label, fmt)
    bar_w = max(3.0, min(40.0, (_W - _PAD_L - _PAD_R) / max(n, 1) * 0.6))
    for r, v in zip(history, values, strict=True):
        x = X(r["step"]) - bar_w / 2
        tip = f"step {r['step']}: " + fmt.format(v)
        parts.append(
            f"<rect x='{x:.1f}' y='{Y(v):.1f}' width='{bar_w:.1f}' "
            f"height='{Y(0) - Y(v):.1f}' class='bar'><title>{_e(tip)}</title></rect>"
        )
    parts.append(
        _legend(
            [
                (
                    label + " per step",
                    "<rect x='{x}' y='{y}' width='16' height='8' class='bar' transform='translate(0,-4)'/>",
                )
            ]
        )
    )
    return _svg(parts, f"{label} per step")


# -- tables ----------------------------------------------------------------------------------


def _steps_table(history: list[dict[str, Any]]) -> str:
    if not history:
        return "<p class='muted'>No step has finished yet.</p>"
    rows = []
    for r in history:
        result = r.get("result") or ("accepted" if r.get("accepted") else "reverted")
        metered = (r.get("usage_total") or {}).get("metered", True)
        cost = (
            ((r.get("usage") or {}).get("total") or {})
            if metered
            else {"calls": sum(v for v in (r.get("calls") or {}).values() if isinstance(v, int))}
        )
        rows.append(
            f"<tr class='{_e(result)}'><td>{_e(r.get('step'))}</td><td>{_fmt(r.get('train_score'))}</td>"
            f"<td>{_fmt(r.get('val_score'))}</td><td>{_fmt(r.get('best_score'))}</td>"
            f"<td>{_e(result)}</td><td>{_e(r.get('reason', ''))}</td>"
            f"<td>{_e(cost.get('calls', '–'))}</td><td>{_fmt(cost.get('usd'), 4)}</td>"
            f"<td>{_fmt(r.get('elapsed_s'), 1)}</td>"
            f"<td>{_feedback(r)}</td></tr>"
        )
    head = (
        "<tr><th>step</th><th>train</th><th>val</th><th>best</th><th>result</th><th>why</th>"
        "<th>calls</th><th>$</th><th>s</th><th>feedback</th></tr>"
    )
    return f"<table class='steps'>{head}{''.join(rows)}</table>"


def _feedback(r: dict[str, Any]) -> str:
    fb = r.get("feedback") or []
    if not fb:
        return "<span class='muted'>–</span>"
    items = "".join(f"<li>{_e(x)}</li>" for x in fb[:20])
    return f"<details><summary>{len(fb)} item{'s' if len(fb) != 1 else ''}</summary><ul>{items}</ul></details>"


def _versions(config: dict[str, Any], history: list[dict[str, Any]], best: dict[str, Any]) -> str:
    params = config.get("parameters") or {}
    if not params:
        return "<p class='muted'>No parameters recorded.</p>"
    best_state = best.get("state") or {}
    out = []
    for name, info in params.items():
        if isinstance(info, dict) and info.get("trainable") is False:
            continue
        initial = info.get("initial") if isinstance(info, dict) else info
        versions = [("initial", 0, initial)]
        for r in history:
            if not r.get("accepted"):
                continue
            value = (r.get("values") or {}).get(name)
            if value is not None and value != versions[-1][2]:
                versions.append((f"step {r['step']}", r["step"], value))
        role = info.get("role", "") if isinstance(info, dict) else ""
        out.append(
            f"<section class='param'><h3>{_e(name)} <span class='muted'>{_e(role)}</span></h3>"
        )
        out.append(
            f"<p class='muted'>{len(versions) - 1} accepted change"
            f"{'s' if len(versions) != 2 else ''}"
            + (
                " · final value is the best candidate"
                if best_state.get(name) == versions[-1][2]
                else ""
            )
            + "</p>"
        )
        out.append(
            f"<details><summary>initial value</summary><pre class='value'>{_e(_text(initial))}</pre></details>"
        )
        for (_, _, prev), (label, _step, value) in zip(versions, versions[1:], strict=False):
            is_best = best_state.get(name) == value
            out.append(
                f"<div class='version'><h4>{_e(label)}{' · best' if is_best else ''}</h4>"
                f"{_diff(_text(prev), _text(value))}"
                f"<details><summary>full value</summary><pre class='value'>{_e(_text(value))}</pre></details></div>"
            )
        out.append("</section>")
    return "".join(out)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _diff(old: str, new: str) -> str:
    lines = list(
        difflib.unified_diff(
            old.splitlines(), new.splitlines(), "before", "after", lineterm="", n=2
        )
    )
    if not lines:
        return "<p class='muted'>(no textual change)</p>"
    out = []
    for line in lines[2:] if len(lines) > 2 else lines:
        cls = (
            "add"
            if line.startswith("+")
            else "del"
            if line.startswith("-")
            else ("hunk" if line.startswith("@@") else "ctx")
        )
        out.append(f"<span class='{cls}'>{_e(line)}</span>")
    return "<pre class='diff'>" + "".join(out) + "</pre>"


# -- graph ---------------------------------------------------------------------------------


def _graph(graph: dict[str, Any] | None) -> str:
    if not graph:
        return "<p class='muted'>No graph was recorded.</p>"
    svg = _graph_svg(graph.get("nodes") or [], graph.get("edges") or [])
    mermaid = graph.get("mermaid") or ""
    return svg + f"<details><summary>Mermaid source</summary><pre>{_e(mermaid)}</pre></details>"


def _graph_svg(nodes: list[dict[str, Any]], edges: list[list[str]]) -> str:
    if not nodes or len(nodes) > 80:
        return "<p class='muted'>The graph is too large to draw; see the Mermaid source.</p>"
    ids = [str(n.get("id")) for n in nodes]
    parents: dict[str, list[str]] = {i: [] for i in ids}
    for a, b in edges:
        if str(b) in parents and str(a) in parents:
            parents[str(b)].append(str(a))
    level: dict[str, int] = {}

    def depth(i: str, stack: frozenset[str] = frozenset()) -> int:
        if i in level:
            return level[i]
        if i in stack:
            return 0
        level[i] = 1 + max((depth(p, stack | {i}) for p in parents[i]), default=-1)
        return level[i]

    for i in ids:
        depth(i)
    columns: dict[int, list[str]] = {}
    for i in ids:
        columns.setdefault(level[i], []).append(i)
    box_w, box_h, gap_x, gap_y = 170, 44, 60, 18
    width = 20 + len(columns) * (box_w + gap_x)
    height = 20 + max(len(c) for c in columns.values()) * (box_h + gap_y)
    pos: dict[str, tuple[float, float]] = {}
    for lv, col in columns.items():
        for k, i in enumerate(col):
            pos[i] = (10 + lv * (box_w + gap_x), 10 + k * (box_h + gap_y))
    info = {str(n.get("id")): n for n in nodes}
    parts = [
        "<defs><marker id='arrow' viewBox='0 0 10 10' refX='10' refY='5' markerWidth='7' "
        "markerHeight='7' orient='auto-start-reverse'><path d='M0,0 L10,5 L0,10 z' "
        "class='arrowhead'/></marker></defs>"
    ]
    for a, b in edges:
        a, b = str(a), str(b)
        if a in pos and b in pos:
            (x1, y1), (x2, y2) = pos[a], pos[b]
            parts.append(
                f"<line x1='{x1 + box_w:.0f}' y1='{y1 + box_h / 2:.0f}' x2='{x2:.0f}' "
                f"y2='{y2 + box_h / 2:.0f}' class='edge' marker-end='url(#arrow)'/>"
            )
    for i in ids:
        x, y = pos[i]
        n = info[i]
        cls = "gparam" if n.get("trainable") else ("gobj" if n.get("objective") else "gnode")
        name = str(n.get("name", i))
        sub = str(n.get("op") or n.get("role") or n.get("kind") or "")
        if n.get("trainable") and n.get("role"):
            sub = str(n["role"])
        tip = f"{name} ({n.get('role', '')}): {n.get('value', '')}"
        parts.append(
            f"<g><title>{_e(tip)}</title><rect x='{x}' y='{y}' width='{box_w}' height='{box_h}' "
            f"rx='6' class='{cls}'/><text x='{x + 8}' y='{y + 18}' class='gname'>{_e(name[:24])}</text>"
            f"<text x='{x + 8}' y='{y + 34}' class='gsub'>{_e(sub[:26])}</text></g>"
        )
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' "
        f"width='{width}' height='{height}' role='img' aria-label='pipeline graph'>"
        f"{''.join(parts)}</svg>"
    )


_CSS = """
table.examples pre{white-space:pre-wrap;max-width:32em;margin:0}tr.fail{background:#fff5f5}
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;
color:#1f2937;padding:0 16px;line-height:1.4}
h1{font-size:22px;margin-bottom:12px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #e5e7eb;
padding-bottom:4px}h3{font-size:15px;margin:18px 0 4px}h4{font-size:13px;margin:10px 0 4px;color:#374151}
.muted{color:#6b7280;font-weight:normal}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:8px}
.card{border:1px solid #e5e7eb;border-radius:6px;padding:8px 10px;background:#f9fafb}
.card .k{font-size:11px;text-transform:uppercase;color:#6b7280;letter-spacing:.03em}
.card .v{font-size:14px;margin-top:2px;word-break:break-word}
svg{display:block;max-width:100%;height:auto;margin:8px 0}
.plot{fill:#fff;stroke:#d1d5db}.grid{stroke:#f3f4f6}.tick{font-size:11px;fill:#6b7280}
.axis,.legend{font-size:12px;fill:#374151}
.best{fill:none;stroke:#2563eb;stroke-width:2.5}.bestsw{fill:#2563eb}
.train{fill:none;stroke:#9ca3af;stroke-width:1.5;stroke-dasharray:5 4}.trainpt{fill:#9ca3af}.trainsw{fill:#9ca3af}
.acc{fill:#16a34a;stroke:#fff;stroke-width:1.5}.rej{fill:#fff;stroke:#dc2626;stroke-width:2.5}
.base{fill:#111827;stroke:#fff;stroke-width:1.5}.bar{fill:#f59e0b}
table.steps{border-collapse:collapse;width:100%;font-size:13px}
table.steps td,table.steps th{border-bottom:1px solid #e5e7eb;padding:4px 6px;text-align:left;vertical-align:top}
tr.accepted td:nth-child(5){color:#15803d;font-weight:600}tr.reverted td:nth-child(5){color:#b91c1c;font-weight:600}tr.rejected td:nth-child(5){color:#b45309;font-weight:600}
pre{background:#f9fafb;border:1px solid #e5e7eb;border-radius:6px;padding:8px;white-space:pre-wrap;
word-break:break-word;font-size:12px}
pre.diff .add{color:#166534;background:#dcfce7;display:block}pre.diff .del{color:#991b1b;background:#fee2e2;display:block}
pre.diff .hunk{color:#6b7280;display:block}pre.diff .ctx{display:block}
.version{border-left:3px solid #bfdbfe;padding-left:10px;margin:8px 0}
.gnode{fill:#f3f4f6;stroke:#9ca3af}.gparam{fill:#fde68a;stroke:#b45309}.gobj{fill:#dbeafe;stroke:#2563eb}
.gname{font-size:12px;fill:#111827}.gsub{font-size:11px;fill:#6b7280}.edge{stroke:#6b7280;stroke-width:1.2}
.arrowhead{fill:#6b7280}
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style></head>
<body>
{body}
<p class="muted">Written by tracegrad. This page is self-contained: no scripts, no network.</p>
</body></html>
"""
