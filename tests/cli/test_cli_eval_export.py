"""``tracegrad eval -o``: every row written as JSONL, CSV or HTML; the summary's counts of
unreadable judge replies and cut replies; the progress on stderr (issue 16 s5)."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import pytest

from tests.cli.conftest import cli
from tracegrad.testing import FakeOpenAIServer
from tracegrad.train import progress as progress_mod

RUBRIC_PROMPT = ("---\nmodel: openai:task-model\ninput: [text]\noutput: summary\n"
                 "metric:\n  judge: Is the summary faithful?\n---\nSummarize: {{ text }}\n")


def _data(tmp_path: Path, n: int = 3) -> Path:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"text {i}", "summary": f"s{i}"}) + "\n"
                            for i in range(n)))
    return data


@pytest.fixture
def judged(tmp_path: Path):
    """A judge-scored prompt file; the judge's second reply has no score at all."""
    prompt = tmp_path / "summary.prompt"
    prompt.write_text(RUBRIC_PROMPT)
    judge_replies = itertools.cycle(["Score: 10\nReason: faithful.", "I cannot say.",
                          "Score: 4\nReason: drops the ending."])

    def reply(body):
        text = body["messages"][-1]["content"]
        if "Rubric:" in text or "rubric" in json.dumps(body).lower():
            return next(judge_replies)
        return "<b>bold</b> summary & more"

    with FakeOpenAIServer(reply) as server:
        yield prompt, _data(tmp_path), server


def test_eval_writes_every_row_as_jsonl_csv_and_html(judged, tmp_path: Path) -> None:
    prompt, data, server = judged
    out = tmp_path / "results.jsonl"
    r = cli("eval", prompt, "--data", data, "--base-url", server.url, "--no-cache",
            "--concurrency", "1", "-o", out, "--json")
    assert r.code == 0, r
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["inputs"] for row in rows] == [{"text": f"text {i}"} for i in range(3)]
    assert rows[0]["prompt"] == "[user] Summarize: text 0\n"  # exactly what was sent
    assert rows[0]["output"] == "<b>bold</b> summary & more"
    assert [row["expected"] for row in rows] == ["s0", "s1", "s2"]
    assert [row["score"] for row in rows] == [1.0, 0.0, 0.4]
    assert "no readable score" in rows[1]["explanation"]
    summary = json.loads(r.stdout)["summary"]
    assert (summary["judge_unreadable"], summary["failures"], summary["n"]) == (1, 2, 3)
    assert summary["truncated_replies"] == 0


def test_eval_csv_and_escaped_html(tmp_path: Path) -> None:
    prompt = tmp_path / "summary.prompt"
    prompt.write_text(RUBRIC_PROMPT.replace("metric:\n  judge: Is the summary faithful?\n",
                                            "metric: exact_match\n"))
    data = _data(tmp_path, 2)
    def reply(body):
        return "s1" if "text 1" in body["messages"][-1]["content"] else "<script>alert(1)</script>"

    with FakeOpenAIServer(reply) as server:
        r = cli("eval", prompt, "--data", data, "--base-url", server.url, "--no-cache",
                "-j", "1", "-o", tmp_path / "r.csv")
        assert r.code == 0, r
        r = cli("eval", prompt, "--data", data, "--base-url", server.url, "--no-cache",
                "-j", "1", "-o", tmp_path / "r.html")
        assert r.code == 0, r
    with open(tmp_path / "r.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [t["score"] for t in table] == ["0", "1"]
    assert json.loads(table[0]["inputs"]) == {"text": "text 0"}
    assert table[0]["output"] == "<script>alert(1)</script>" and table[1]["expected"] == "s1"
    page = (tmp_path / "r.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "judge_unreadable: 0" in page and "[user] Summarize: text 1" in page
    assert "wrote 2 rows to" in r.stderr


def test_an_unknown_output_extension_fails_before_any_call(judged, tmp_path: Path) -> None:
    prompt, data, server = judged
    r = cli("eval", prompt, "--data", data, "--base-url", server.url, "-o", tmp_path / "r.xlsx")
    assert r.code == 2, r
    assert r.stderr.strip().splitlines() == [
        f"error: --output {tmp_path / 'r.xlsx'}: unknown extension '.xlsx' for the results "
        "(use .csv, .html, .jsonl)"]
    assert server.request_count == 0 and not (tmp_path / "r.xlsx").exists()


def test_eval_shows_progress_on_stderr_unless_quiet(judged, monkeypatch) -> None:
    monkeypatch.setattr(progress_mod, "LINE_INTERVAL", 0.0)
    prompt, data, server = judged
    r = cli("eval", prompt, "--data", data, "--base-url", server.url, "--no-cache", "-j", "1")
    assert r.code == 0, r
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("eval ")]
    assert [ln.split()[1] for ln in lines][:3] == ["1/3", "2/3", "3/3"]
    assert "calls 6" in lines[2]  # 3 answers and 3 judge calls so far
    q = cli("eval", prompt, "--data", data, "--base-url", server.url, "--no-cache", "-q")
    assert q.code == 0, q
    assert not [ln for ln in q.stderr.splitlines() if ln.startswith("eval ")]
    assert q.stdout.splitlines()[0] == r.stdout.splitlines()[0]  # results are unchanged


def test_eval_says_how_many_judge_replies_were_unreadable(judged) -> None:
    prompt, data, server = judged
    r = cli("eval", prompt, "--data", data, "--base-url", server.url, "--no-cache", "-j", "1")
    assert r.code == 0, r
    assert "judge replies with no readable score (each counted 0): 1" in r.stdout


def test_the_run_report_has_the_per_example_table(counting, world_server, tmp_path) -> None:
    run = tmp_path / "run"
    r = cli("optimize", counting["prompt"], "--train", counting["train"], "--val",
            counting["val"], "--base-url", world_server.url, "--steps", "1", "--run-dir", run,
            "--out", tmp_path / "o.prompt", "--no-cache", "-q")
    assert r.code == 0, r
    data = json.loads((run / "examples.json").read_text())
    assert data["split"] == "val" and len(data["rows"]) == 15
    assert data["rows"][0]["prompt"].startswith("[user] ")
    assert data["rows"][0]["inputs"]["question"] in data["rows"][0]["prompt"]
    page = (run / "report.html").read_text()
    assert '<table class="examples">' in page
    assert page.count('<tr class="') - page.count('<tr class="step') >= 15


def test_output_without_data_is_refused(judged, tmp_path: Path) -> None:
    prompt, _, server = judged
    r = cli("eval", prompt, "--base-url", server.url, "-o", tmp_path / "r.jsonl")
    assert r.code == 2 and "--output writes the rows of a scored dataset" in r.stderr
    assert server.request_count == 0
