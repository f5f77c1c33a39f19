from __future__ import annotations

import json
import re

import pytest

from tracegrad.llm import OpenAIEngine
from tracegrad.train import optimize, write_report

from .sim_task import QA, RULES, forward_llm, optimizer_llm, write_data

ENV_KEY = "sk-envsecret0123456789abcdefXYZ"
ENGINE_KEY = "sk-enginesecret9876543210zyxwvuT"


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    engine = OpenAIEngine("gpt-4o-mini", api_key=ENGINE_KEY, base_url="http://127.0.0.1:9/v1")
    train, val = write_data(tmp_path)
    model = QA(forward_llm(), system="You are a <helpful> assistant & friend.")
    optimize(
        model,
        train,
        val,
        metric="exact_match",
        optimizer_engine=optimizer_llm(),
        engine=engine,
        steps=8,
        batch_size=4,
        seed=3,
        run_dir=tmp_path / "run",
        progress=False,
        config={
            "api_key": ENGINE_KEY,
            "note": f"my key is {ENV_KEY}",
            "headers": {"Authorization": "Bearer abcdefghijklmnop"},
        },
    )
    return tmp_path / "run"


def test_report_is_self_contained_and_complete(run_dir):
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    html = path.read_text()
    assert html.count("<svg") >= 3  # scores, cost, graph
    assert "<polyline" in html or "<path d='M" in html
    history = [json.loads(x) for x in (run_dir / "history.jsonl").read_text().splitlines()]
    accepted = [r for r in history if r["accepted"]]
    assert len(accepted) == 3
    for r in accepted:
        assert f"step {r['step']}" in html
    for _, rule in RULES.values():  # every accepted rule appears as an added diff line
        assert re.search(r"<span class='add'>\+[^<]*" + re.escape(rule), html)
    assert "<script" not in html and "<link" not in html and "src=" not in html
    assert "@import" not in html and "url(http" not in html
    # model-written values are escaped, never interpreted
    assert "&lt;helpful&gt; assistant &amp; friend." in html and "<helpful>" not in html
    assert "perfect" in html and "Mermaid source" in html


def test_no_secret_reaches_any_run_file(run_dir):
    write_report(run_dir)
    for f in run_dir.iterdir():
        text = f.read_text()
        assert ENV_KEY not in text and ENGINE_KEY not in text, f.name
        assert "abcdefghijklmnop" not in text, f.name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["user"]["api_key"] == "[REDACTED]"
    assert config["engines"]["engine"]["model"] == "gpt-4o-mini"
    assert "127.0.0.1" in config["engines"]["engine"]["base_url"]


def test_report_of_an_empty_run(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    html = write_report(tmp_path).read_text()
    assert "No step has finished yet" in html


def test_a_report_of_an_older_run_holding_a_key_does_not_repeat_it(tmp_path):
    """A run directory written before keys were scrubbed everywhere (or edited by hand):
    the report is rendered in a process that knows the key, and must not show it."""
    from tracegrad.redaction import remember

    key = "plain-REPORT-key-0123456789"  # no sk- shape: only known, not recognisable
    remember(key)
    (tmp_path / "config.json").write_text(json.dumps({"initial": {"prompt": f"hi {key}"}}))
    rec = {"step": 1, "accepted": True, "result": "accepted", "values": {"prompt": f"x {key}"},
           "proposed": {"prompt": f"x {key}"}, "feedback": [f"echo {key}"], "val_score": 1.0}
    (tmp_path / "history.jsonl").write_text(json.dumps(rec) + "\n")
    html = write_report(tmp_path).read_text()
    assert key not in html and "REPORT-key-0123456789" not in html
