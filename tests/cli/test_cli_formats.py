"""The CLI on Prompty, Dotprompt and chat-shaped tracegrad files: eval without data runs
one example from the defaults, optimize against the fake server changes only the
trainable message, and a bad file is one 'error: FILE:LINE:' line per problem, exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tracegrad.promptfile import PromptFile
from tracegrad.testing import FakeOpenAIServer

from .conftest import PROMPTS, cli

EXAMPLES = Path(__file__).resolve().parents[1] / "formats" / "examples"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    for name in ("counting.prompty", "counting.prompt", "support.prompt"):
        shutil.copyfile(EXAMPLES / name, d / name)
    for split in ("train", "val"):
        shutil.copyfile(PROMPTS / f"object_counting.{split}.jsonl", d / f"{split}.jsonl")
    return d


def test_eval_without_data_runs_one_example_from_the_defaults(work: Path) -> None:
    r = cli("eval", work / "counting.prompty", "--model", "mock")
    assert r.code == 0, r
    assert "question: I have a goat, three dogs, and a chicken." in r.stdout
    assert "[system] Answer the following question." in r.stdout
    assert "output: " in r.stdout and "calls: 1" in r.stdout
    assert "no --data" in r.stderr


def test_eval_without_data_needs_defaults(work: Path) -> None:
    r = cli("eval", work / "support.prompt", "--model", "mock")
    assert r.code == 2, r
    assert r.stderr.startswith(f"error: {work / 'support.prompt'}:")
    assert "question has none" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["counting.prompty", "counting.prompt"])
def test_optimize_changes_only_the_trainable_message(work: Path, world_server: FakeOpenAIServer,
                                                     name: str) -> None:
    path = work / name
    before = path.read_text()
    pf = PromptFile.load(path)
    piece = pf.chat.trainable[0]
    r = cli("optimize", path, "--train", work / "train.jsonl", "--val", work / "val.jsonl",
            "--base-url", world_server.url, "--model", "openai:fake-model", "--steps", "4",
            "--batch-size", "4", "--run-dir", work / f"run-{name}", "--json",
            env={"OPENAI_API_KEY": "sk-test"})
    assert r.code == 0, r
    data = json.loads(r.stdout)
    assert data["improved"] and data["best_score"] > data["baseline_score"]
    after = path.read_text()
    new = PromptFile.load(path).trainable_values()["system"]
    assert new != piece.text and "number words" in new
    assert after == before[:piece.start] + new + before[piece.end:]  # every other byte kept
    assert (work / f"{name}.bak").read_text() == before
    assert (work / f"run-{name}" / f"best{path.suffix}").read_text() == after
    # the system message went to the server as a system message
    forward = [b["messages"] for b in world_server.requests
               if "Inputs to give feedback" not in json.dumps(b["messages"])]
    assert forward[0][0]["role"] == "system" and forward[0][1]["role"] == "user"


def test_every_error_of_a_file_is_its_own_line_and_nothing_is_written(work: Path,
                                                                     tmp_path: Path) -> None:
    bad = work / "bad.prompt"
    bad.write_text("---\ninput: [question]\noutput: answer\nmetrc: numeric\n"
                   "params:\n  temperature: hot\ntrainable: sytem\n---\n"
                   "system:\nAnswer.\nuser:\n{{ question }} {{ answr }}\n")
    before = sorted(p.name for p in work.iterdir())
    r = cli("optimize", bad, "--train", work / "train.jsonl", "--model", "mock",
            "--run-dir", tmp_path / "run")
    assert r.code == 2, r
    lines = r.stderr.strip().splitlines()
    assert [ln.split(":")[2] for ln in lines] == ["4", "6", "7", "12"], lines
    assert all(ln.startswith(f"error: {bad}:") for ln in lines)
    assert "unknown key 'metrc'" in lines[0] and "'answr'" in lines[3]
    assert sorted(p.name for p in work.iterdir()) == before
    assert not (tmp_path / "run").exists()
