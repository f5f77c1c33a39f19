from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tracegrad.train import optimize
from tracegrad.train.runs import RunDir

from .sim_task import INITIAL, QA, forward_llm, optimizer_llm, volatile_free, write_data

ROOT = Path(__file__).resolve().parents[2]


class Stop(Exception):
    pass


def args(tmp_path, run_dir, **kw):
    train, val = write_data(tmp_path)
    base = dict(
        metric="exact_match",
        optimizer_engine=optimizer_llm(),
        steps=8,
        batch_size=4,
        seed=3,
        run_dir=run_dir,
        progress=False,
        concurrency=4,
    )
    base.update(kw)
    return train, val, base


def lines(run_dir: Path) -> list[str]:
    return (run_dir / "history.jsonl").read_text().splitlines()


def reference(tmp_path) -> list[dict]:
    train, val, kw = args(tmp_path, tmp_path / "ref")
    return optimize(QA(forward_llm()), train, val, **kw).history


def test_resume_after_an_exception_in_on_step(tmp_path):
    ref = reference(tmp_path)
    run = tmp_path / "run"
    train, val, kw = args(tmp_path, run)

    def on_step(rec):
        if rec["step"] == 2:
            raise Stop

    model = QA(forward_llm())
    with pytest.raises(Stop):
        optimize(model, train, val, on_step=on_step, **kw)
    first_two = lines(run)
    assert len(first_two) == 2
    state = json.loads((run / "state.json").read_text())
    assert state["step"] == 2 and state["stopped_reason"].startswith("error: Stop")

    fresh = QA(forward_llm())  # a new process would start from the initial prompt
    assert fresh.system.value == INITIAL
    train, val, kw = args(tmp_path, None, resume=run)
    res = optimize(fresh, train, val, **kw)
    assert lines(run)[:2] == first_two
    assert [volatile_free(r) for r in res.history] == [volatile_free(r) for r in ref]
    assert res.best_score == 1.0 and fresh.system.value == res.best_state["system"]
    config = json.loads((run / "config.json").read_text())
    assert config["resumes"][0]["at_step"] == 2


def test_resume_after_sigkill(tmp_path):
    ref = reference(tmp_path)
    run = tmp_path / "run"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from tests.train.sim_task import run_killed_at_step_2 as f; f(sys.argv[2], sys.argv[3])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(ROOT), str(run), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    first_two = lines(run)
    assert [json.loads(x)["step"] for x in first_two] == [1, 2]
    # the process died right after step 2's files: a torn third line is what a crash
    # in the middle of an append leaves behind
    with open(run / "history.jsonl", "a") as f:
        f.write('{"step": 3, "parent": "c')
    assert RunDir(run).read_history()[-1]["step"] == 2

    train, val, kw = args(tmp_path, None, resume=run)
    res = optimize(QA(forward_llm()), train, val, **kw)
    after = lines(run)
    assert after[:2] == first_two
    assert all(json.loads(x) for x in after)  # the torn line is gone
    assert [volatile_free(r) for r in res.history] == [volatile_free(r) for r in ref]
    assert res.stopped_reason == "perfect"


def test_keyboard_interrupt_saves_and_reraises(tmp_path):
    run = tmp_path / "run"
    train, val, kw = args(tmp_path, run)
    model = QA(forward_llm())

    def on_step(rec):
        if rec["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        optimize(model, train, val, on_step=on_step, **kw)
    state = json.loads((run / "state.json").read_text())
    best = json.loads((run / "best.json").read_text())
    assert state["stopped_reason"] == "interrupted" and state["step"] == 3
    assert model.system.value == best["state"]["system"]  # parameters end at the best


def test_resume_refuses_different_data(tmp_path):
    run = tmp_path / "run"
    train, val, kw = args(tmp_path, run, steps=1)
    optimize(QA(forward_llm()), train, val, **kw)
    train.write_text(
        train.read_text() + json.dumps({"question": "What is 1 + 1?", "answer": "2"}) + "\n"
    )
    train, val, kw = args(tmp_path, None, resume=run, steps=2)
    train.write_text(
        train.read_text() + json.dumps({"question": "What is 1 + 1?", "answer": "2"}) + "\n"
    )
    with pytest.raises(ValueError, match="train data differs"):
        optimize(QA(forward_llm()), train, val, **kw)


def test_state_files_are_replaced_atomically(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train, val, kw = args(tmp_path, run, steps=1)
    replaced = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append(Path(b).name), real(a, b))[1])
    optimize(QA(forward_llm()), train, val, **kw)
    assert {"config.json", "state.json", "best.json"} <= set(replaced)
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
