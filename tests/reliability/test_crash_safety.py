"""Crash safety of ``tracegrad optimize`` as a real child process: kill -9 and resume (a
two-trial smoke test of ``scripts/kill9_trials.py``), two runs sharing one cache file at
once, and Ctrl-C."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from .reliability_harness import (
    SECRET,
    best_value,
    cache_entries,
    check_cache,
    check_prompt_file,
    check_run_dir,
    cli_env,
    copy_counting,
    has_traceback,
    history_lines,
    kill9_trial,
    optimize_args,
    resume_args,
    run_cli,
    start_cli,
    subprocess_env,
    wait_then_signal,
    world_server,
)

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
STEPS = 2  # enough for a kill or Ctrl-C in the middle of a later step


@pytest.fixture(scope="module")
def server():
    with world_server(latency=0.01) as (srv, _):
        yield srv


@pytest.fixture(scope="module")
def reference(server, tmp_path_factory: pytest.TempPathFactory):
    """The best prompt of an uninterrupted run: a resumed run must end at the same one."""
    tmp = tmp_path_factory.mktemp("reference")
    task = copy_counting(tmp / "task")
    r = run_cli(optimize_args(task, server.url, tmp / "run", "--json", steps=STEPS),
                cli_env(tmp))
    assert r.code == 0, r
    assert check_run_dir(tmp / "run", finished=True, steps=STEPS) == []
    return best_value(tmp / "run")


@pytest.mark.parametrize(
    "moment",
    [
        pytest.param(lambda run_dir: (run_dir / "config.json").exists(), id="during-baseline"),
        pytest.param(lambda run_dir: history_lines(run_dir) >= 1, id="during-step-2"),
    ],
)
def test_kill9_then_resume_completes_with_nothing_lost(server, reference, tmp_path: Path,
                                                       moment) -> None:
    t = kill9_trial(1, tmp_path, server.url, when=moment, steps=STEPS, reference=reference,
                    in_process_resume=True)
    assert t.killed, t
    assert t.damage_after_kill == [], t
    assert t.resumed, t
    assert t.damage_after_resume == [], t
    assert t.steps >= 1 and t.same_as_reference, t
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["stopped_reason"] in ("steps", "perfect")
    # the resume is recorded in the run's config
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config.get("resumes"), config


def test_two_runs_sharing_one_cache_file_both_complete(server, tmp_path: Path) -> None:
    shared = tmp_path / "shared-cache"
    procs = []
    for name in ("a", "b"):
        task = copy_counting(tmp_path / name / "task")
        env = subprocess_env(tmp_path / name, TRACEGRAD_CACHE_DIR=str(shared))
        args = optimize_args(task, server.url, tmp_path / name / "run", "--json", steps=STEPS)
        procs.append((name, task, start_cli(args, env, cwd=tmp_path / name)))
    for name, _task, p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, (name, out, err)
        assert "caching is off" not in err and "unreadable" not in err, err  # never disabled
        assert not has_traceback(out + err)
        data = json.loads(out)
        assert data["stopped_reason"] in ("steps", "perfect")
        assert check_run_dir(tmp_path / name / "run", finished=True, steps=STEPS) == []
    assert check_cache(shared) == []
    assert cache_entries(shared) > 10
    # the same requests, so the second run was served (at least partly) from the first's
    # replies or wrote the same keys: no duplicates, no torn rows
    import sqlite3

    con = sqlite3.connect(shared / "cache.sqlite3")
    try:
        rows = con.execute("SELECT key, value FROM replies").fetchall()
    finally:
        con.close()
    assert len({k for k, _ in rows}) == len(rows)
    for _, v in rows:
        assert json.loads(v)["text"]


def test_ctrl_c_saves_the_run_exits_130_and_resumes(server, tmp_path: Path) -> None:
    task = copy_counting(tmp_path / "task")
    original = task["prompt"].read_bytes()
    run_dir = tmp_path / "run"
    env = subprocess_env(tmp_path)
    args = optimize_args(task, server.url, run_dir, "--json", steps=STEPS)
    p = start_cli(args, env, cwd=tmp_path)
    assert wait_then_signal(p, signal.SIGINT, when=lambda: history_lines(run_dir) >= 1)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, (out, err)
    assert not has_traceback(out + err), err
    flat = " ".join(err.split())
    assert "interrupted" in flat and f"--resume {run_dir}" in flat, err
    assert out == ""  # no half result on stdout
    assert SECRET not in out + err
    state = json.loads((run_dir / "state.json").read_text())
    assert state["stopped_reason"] == "interrupted" and state["step"] >= 1
    assert check_run_dir(run_dir) == []
    assert check_prompt_file(task["prompt"], original) == []

    r = run_cli(resume_args(args, run_dir), cli_env(tmp_path))
    assert r.code == 0, r
    assert check_run_dir(run_dir, finished=True, steps=STEPS) == []
    assert check_prompt_file(task["prompt"], original) == []


def test_ctrl_c_before_the_first_call_is_clean_too(server, tmp_path: Path) -> None:
    """Interrupted right after the run directory appears (engines built, nothing sent)."""
    task = copy_counting(tmp_path / "task")
    run_dir = tmp_path / "run"
    env = subprocess_env(tmp_path)
    args = optimize_args(task, server.url, run_dir, "--json", steps=STEPS)
    p = start_cli(args, env, cwd=tmp_path)
    assert wait_then_signal(p, signal.SIGINT, when=run_dir.exists)
    out, err = p.communicate(timeout=60)
    assert p.returncode in (130, 1), (out, err)
    assert "interrupted" in err and not has_traceback(out + err), err
    r = run_cli(resume_args(args, run_dir), cli_env(tmp_path))
    assert r.code == 0, r
    assert check_run_dir(run_dir, finished=True, steps=STEPS) == []


def _world_run(tmp: Path, steps: int, resume: bool = False):
    from tracegrad.demo import CountingWorld
    from tracegrad.promptfile import PromptFile
    from tracegrad.train import optimize

    task = copy_counting(tmp / "task") if not (tmp / "task").exists() else {
        "prompt": tmp / "task" / "object_counting.prompt",
        "train": tmp / "task" / "object_counting.train.jsonl",
        "val": tmp / "task" / "object_counting.val.jsonl"}
    engine = CountingWorld().engine
    pf = PromptFile.load(task["prompt"])
    return optimize(pf.to_module(engine), pf.load_dataset(task["train"]),
                    pf.load_dataset(task["val"]), metric=pf.metric_fn(), steps=steps,
                    batch_size=3, engine=engine, optimizer_engine=engine,
                    run_dir=tmp / "run", resume=(tmp / "run") if resume else None,
                    progress=False)


def test_ctrl_c_between_a_steps_history_line_and_its_state_keeps_them_consistent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The narrowest window of a clean stop: step 2 is in history.jsonl, state.json is not
    written yet. The saved state must include step 2, or the resume silently redoes it."""
    from tracegrad.train import runs

    real = runs.RunDir.append_history

    def append_then_interrupt(self, record):
        real(self, record)
        if record["step"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(runs.RunDir, "append_history", append_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _world_run(tmp_path, steps=4)
    monkeypatch.undo()
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["stopped_reason"] == "interrupted"
    assert state["step"] == 2 and check_run_dir(tmp_path / "run") == []
    history_before = (tmp_path / "run" / "history.jsonl").read_text()
    result = _world_run(tmp_path, steps=4, resume=True)
    assert (tmp_path / "run" / "history.jsonl").read_text().startswith(history_before)
    assert check_run_dir(tmp_path / "run", finished=True, steps=4) == []
    assert result.steps_done >= 2


def test_a_resume_removes_temp_files_a_killed_writer_left(tmp_path: Path) -> None:
    _world_run(tmp_path, steps=1)
    run_dir = tmp_path / "run"
    for name in (".state.json.4242.deadbeef.tmp", ".report.html.4242.cafe.tmp",
                 ".best.prompt.x1y2.tmp"):
        (run_dir / name).write_text("half")
    assert check_run_dir(run_dir) != []
    _world_run(tmp_path, steps=2, resume=True)
    assert check_run_dir(run_dir, finished=True) == []


@pytest.mark.parametrize("left_behind", [(), ("original.prompt", "calls.jsonl")])
def test_resuming_a_run_killed_before_it_started_starts_it(server, tmp_path: Path,
                                                           left_behind) -> None:
    """kill -9 between ``run dir: ...`` and the run's config.json: the directory holds at
    most the prompt copy and an empty call log. ``--resume`` starts the run there instead
    of refusing a directory the user was just told about."""
    task = copy_counting(tmp_path / "task")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in left_behind:
        (run_dir / name).write_bytes(task["prompt"].read_bytes() if name.endswith("prompt")
                                     else b"")
    args = optimize_args(task, server.url, run_dir, "--json", steps=2)
    r = run_cli(resume_args(args, run_dir), cli_env(tmp_path))
    assert r.code == 0, r
    assert "holds no run yet" in r.stderr
    assert check_run_dir(run_dir, finished=True, steps=2) == []


def test_resume_of_a_directory_that_is_not_a_run_is_still_refused(server, tmp_path: Path
                                                                   ) -> None:
    task = copy_counting(tmp_path / "task")
    other = tmp_path / "not-a-run"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    r = run_cli(resume_args(optimize_args(task, server.url, other), other), cli_env(tmp_path))
    assert r.code == 2 and "not a run directory" in r.stderr, r
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
