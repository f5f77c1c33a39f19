"""Fault injection through ``tracegrad optimize``: the fault matrix, and what the user sees.

The matrix (``scripts/fault_matrix.py --quick``) drives real optimization runs through a
FakeOpenAIServer that misbehaves in every way the issue lists; each run must complete, or
stop with a message that says how to resume and then resume to the end, without a
traceback, a damaged prompt file, or a step recorded twice or lost.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from .reliability_harness import (
    MODEL,
    SCENARIOS,
    SECRET,
    check_prompt_file,
    check_run_dir,
    cli_env,
    copy_counting,
    format_table,
    has_traceback,
    optimize_args,
    quick_plan,
    resume_args,
    run_cli,
    run_matrix,
    summarize,
    world_server,
)


def test_fault_matrix_every_run_completes_or_stops_cleanly(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    rows = run_matrix(tmp_path, quick_plan(), steps=2)
    table = format_table(rows)
    with capsys.disabled():
        print("\n" + table)
    s = summarize(rows)
    assert s["scenarios"] == len(SCENARIOS) == 19, table
    assert s["files_damaged"] == 0, table
    assert s["unclean"] == 0 and s["tracebacks"] == 0, table
    assert s["completed"] + s["stopped_cleanly"] == s["runs"], table
    # the outage outlasts every retry: those runs stop, say how to resume, and resume (a
    # storm that happens to outlast one call's retries may stop a run too: the same rules)
    stopped = [r for r in rows if r.outcome == "stopped"]
    outage = [r for r in rows if r.scenario == "outage-then-resume"]
    assert outage and all(r.outcome == "stopped" for r in outage), table
    assert s["resumed_after_stop"] == len(stopped), table
    # the faults really happened (the matrix is not testing a quiet server)
    for r in rows:
        sc = next(x for x in SCENARIOS if x.name == r.scenario)
        if sc.fault is not None:
            assert r.injected > 0, (r.scenario, r.mode)
    assert s["faults_injected"] > 100, table


def test_outage_message_names_the_server_and_how_to_resume(tmp_path: Path) -> None:
    task = copy_counting(tmp_path / "task")
    original = task["prompt"].read_bytes()
    run_dir = tmp_path / "run"
    sc = next(s for s in SCENARIOS if s.name == "outage-then-resume")
    with world_server(sc) as (server, world):
        args = optimize_args(task, server.url, run_dir, "--json", steps=2)
        r = run_cli(args, cli_env(tmp_path))
        assert r.code == 1, r
        assert r.stdout == "", r  # --json prints nothing on failure: no half result
        err = " ".join(r.stderr.split())
        assert "error:" in err and "HTTP 503" in err and "gave up after" in err, r
        assert server.url in err and f"--resume {run_dir}" in err, r
        assert not has_traceback(r.output) and SECRET not in r.output
        assert check_run_dir(run_dir) == []
        state = json.loads((run_dir / "state.json").read_text())
        assert state["stopped_reason"].startswith("error: ") and "503" in state["stopped_reason"]
        assert check_prompt_file(task["prompt"], original) == []
        done_before = state["step"]

        world.repair()
        again = run_cli(resume_args(args, run_dir), cli_env(tmp_path))
        assert again.code == 0, again
        data = json.loads(again.stdout)
        assert data["stopped_reason"] in ("steps", "perfect")
        assert check_run_dir(run_dir, finished=True, steps=2) == []
        history = [json.loads(x) for x in (run_dir / "history.jsonl").read_text().splitlines()]
        assert len(history) >= done_before
        assert check_prompt_file(task["prompt"], original) == []


def test_server_down_from_the_start_exits_1_and_writes_no_prompt(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    task = copy_counting(tmp_path / "task")
    original = task["prompt"].read_bytes()
    run_dir = tmp_path / "run"
    r = run_cli(optimize_args(task, f"http://127.0.0.1:{port}/v1", run_dir, steps=1),
                cli_env(tmp_path))
    assert r.code == 1, r
    assert "could not connect" in r.stderr or "every example" in r.stderr, r
    assert not has_traceback(r.output)
    assert task["prompt"].read_bytes() == original
    assert not task["prompt"].with_name("object_counting.prompt.bak").exists()
    assert check_run_dir(run_dir) == []


@pytest.mark.parametrize("optimizer", ["tgd", "trace", "opro"])
def test_a_useless_model_leaves_the_prompt_file_byte_identical(tmp_path: Path,
                                                               optimizer: str) -> None:
    """A model that only echoes the prompt never wins the validation gate: no write, no .bak,
    and every step is recorded once."""
    sc = next(s for s in SCENARIOS if s.name == "echo-prompt")
    task = copy_counting(tmp_path / "task")
    original = task["prompt"].read_bytes()
    run_dir = tmp_path / "run"
    with world_server(sc) as (server, _):
        r = run_cli(optimize_args(task, server.url, run_dir, "--json", steps=2,
                                  optimizer=optimizer), cli_env(tmp_path))
    assert r.code == 0, r
    data = json.loads(r.stdout)
    assert data["improved"] is False and data["written"] is None
    assert task["prompt"].read_bytes() == original
    assert not task["prompt"].with_name("object_counting.prompt.bak").exists()
    assert check_run_dir(run_dir, finished=True, steps=2) == []


def test_a_good_run_replaces_the_prompt_and_keeps_the_original_as_bak(tmp_path: Path) -> None:
    task = copy_counting(tmp_path / "task")
    original = task["prompt"].read_bytes()
    run_dir = tmp_path / "run"
    # sparse faults: no call can meet five in a row, so the run must complete and improve
    sc = replace(next(s for s in SCENARIOS if s.name == "5xx-intermittent"), times=1, every=7)
    with world_server(sc) as (server, world):
        r = run_cli(optimize_args(task, server.url, run_dir, "--json", steps=3),
                    cli_env(tmp_path))
        assert world.injected > 0
    assert r.code == 0, r
    data = json.loads(r.stdout)
    assert data["improved"] is True, r
    bak = task["prompt"].with_name("object_counting.prompt.bak")
    assert bak.read_bytes() == original
    assert task["prompt"].read_bytes() != original
    assert check_prompt_file(task["prompt"], original) == []
    assert (run_dir / "best.prompt").read_text() == task["prompt"].read_text()


def test_replies_over_the_cache_cap_are_used_but_not_cached(tmp_path: Path) -> None:
    """issue 12 s6: a 1 MB reply was written to the shared cache file like any other."""
    task = copy_counting(tmp_path / "task")
    env = cli_env(tmp_path, TRACEGRAD_CACHE_MAX_REPLY_BYTES="100000")
    with world_server() as (server, _):
        evaluate = ["eval", task["prompt"], "--data", task["val"], "--model", MODEL,
                    "--base-url", server.url, "--json"]
        server.inject("huge", times=2)
        first = run_cli(evaluate, env)
        info = run_cli(["cache", "info", "--json"], env)
        again = run_cli(evaluate, env)
        sent = server.request_count
    assert first.code == 0 and again.code == 0, (first, again)
    assert len(json.loads(first.stdout)["results"]) == 5
    data = json.loads(info.stdout)
    assert (data["max_reply_bytes"], data["skipped_large"], data["entries"]) == (100_000, 2, 3)
    assert sent == 5 + 2  # only the two replies that were not stored are asked again
    assert (tmp_path / "cache" / "cache.sqlite3").stat().st_size < 500_000
