"""optimize on the command line: progress of every evaluation on stderr (``--quiet`` off),
and a run that ends before ``--steps`` says why (issue 16 s5)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.cli.conftest import PROMPTS, cli
from tracegrad.testing import FakeOpenAIServer
from tracegrad.train import progress as progress_mod


def _oracle() -> FakeOpenAIServer:
    """Answers every support ticket with its label: the baseline is already perfect."""
    label = {}
    for part in ("train", "val"):
        for line in (PROMPTS / f"support_intent.{part}.jsonl").read_text().splitlines():
            row = json.loads(line)
            label[row["ticket"]] = row["intent"]

    def reply(body):
        text = body["messages"][-1]["content"]
        return next((v for k, v in label.items() if k in text), "billing")

    return FakeOpenAIServer(reply)


def _optimize(server, tmp_path: Path, *extra: str):
    return cli("optimize", PROMPTS / "support_intent.prompt", "--train",
               PROMPTS / "support_intent.train.jsonl", "--val",
               PROMPTS / "support_intent.val.jsonl", "--base-url", server.url, "--steps", "3",
               "--no-cache", "-j", "1", "--run-dir", tmp_path / "run", "--out",
               tmp_path / "o.prompt", *extra)


def test_a_run_that_stops_early_says_why(tmp_path: Path) -> None:
    with _oracle() as server:
        r = _optimize(server, tmp_path, "-q")
    assert r.code == 0, r
    assert ("steps: 0 (perfect), optimizer tgd -- stopped early: the validation score "
            "reached 1.0, so there was nothing left to learn") in r.stdout.splitlines()
    with _oracle() as server:  # a run that makes all its steps says nothing of the kind
        full = cli("optimize", PROMPTS / "support_intent.prompt", "--train",
                   PROMPTS / "support_intent.train.jsonl", "--base-url", server.url,
                   "--steps", "1", "--no-cache", "-q", "--run-dir", tmp_path / "r2",
                   "--out", tmp_path / "o2.prompt")
    assert full.code == 0, full
    assert "stopped early" not in full.stdout and "steps: 1 (steps)" in full.stdout


def test_the_baseline_reports_its_progress_and_quiet_silences_it(tmp_path: Path,
                                                                 monkeypatch) -> None:
    monkeypatch.setattr(progress_mod, "LINE_INTERVAL", 0.0)
    with _oracle() as server:
        r = _optimize(server, tmp_path)
        counts = [int(n) for n in re.findall(r"baseline: validation (\d+)/15 ETA", r.stderr)]
        assert counts == list(range(1, 16)), r.stderr
        assert "calls 15" in r.stderr
        q = _optimize(server, tmp_path / "q", "--quiet")
    assert "baseline: validation" not in q.stderr
