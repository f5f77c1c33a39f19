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


@pytest.fixture(scope="module")
def server():
    with world_server(latency=0.01) as (srv, _):
        yield srv


@pytest.fixture(scope="module")
def reference(server, tmp_path_factory: pytest.TempPathFactory):
    """The best prompt of an uninterrupted run: a resumed run must end at the same one."""
    tmp = tmp_path_factory.mktemp("reference")
    task = copy_counting(tmp / "task")
    r = run_cli(optimize_args(task, server.url, tmp / "run", "--json"), cli_env(tmp))
    assert r.code == 0, r
    assert check_run_dir(tmp / "run", finished=True, steps=3) == []
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
    t = kill9_trial(1, tmp_path, server.url, when=moment, steps=3, reference=reference,
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
        args = optimize_args(task, server.url, tmp_path / name / "run", "--json")
        procs.append((name, task, start_cli(args, env, cwd=tmp_path / name)))
    for name, task, p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, (name, out, err)
        assert "cache" not in err.lower() or "warning" not in err.lower(), err  # never disabled
        assert not has_traceback(out + err)
        data = json.loads(out)
        assert data["stopped_reason"] in ("steps", "perfect")
        assert check_run_dir(tmp_path / name / "run", finished=True, steps=3) == []
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
    args = optimize_args(task, server.url, run_dir, "--json")
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
    assert check_run_dir(run_dir, finished=True, steps=3) == []
    assert check_prompt_file(task["prompt"], original) == []


def test_ctrl_c_before_the_first_call_is_clean_too(server, tmp_path: Path) -> None:
    """Interrupted right after the run directory appears (engines built, nothing sent)."""
    task = copy_counting(tmp_path / "task")
    run_dir = tmp_path / "run"
    env = subprocess_env(tmp_path)
    args = optimize_args(task, server.url, run_dir, "--json")
    p = start_cli(args, env, cwd=tmp_path)
    assert wait_then_signal(p, signal.SIGINT, when=run_dir.exists)
    out, err = p.communicate(timeout=60)
    assert p.returncode in (130, 1), (out, err)
    assert "interrupted" in err and not has_traceback(out + err), err
    r = run_cli(resume_args(args, run_dir), cli_env(tmp_path))
    assert r.code == 0, r
    assert check_run_dir(run_dir, finished=True, steps=3) == []
