"""``eval --batch``, ``optimize --batch-eval`` and ``tracegrad batch status|cancel``, against
FakeOpenAIServer's Batch API; kill -9 while a batch is pending, and the resume polls it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tracegrad.llm.batchjournal import BatchJournal
from tracegrad.testing import FakeOpenAIServer

from .conftest import SECRET, cli

PROMPT = """---
model: openai:gpt-4o-mini
input:
  question: a request to repeat a number
output: answer
metric: exact_match
---
{{ question }}
"""
CLI_BOOT = "import sys; from tracegrad.cli import app; sys.exit(app())"


def reply(body: dict[str, Any]) -> str:
    n = body["messages"][-1]["content"].split()[-1]
    return "8" if n == "7" else n  # wrong on 7 only


@pytest.fixture
def task(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "qa.prompt").write_text(PROMPT)
    with open(tmp_path / "data.jsonl", "w") as f:
        for i in range(40):
            f.write(json.dumps({"question": f"row {i}: say {i}", "answer": str(i)}) + "\n")
    return {"prompt": tmp_path / "qa.prompt", "data": tmp_path / "data.jsonl"}


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(reply) as s:
        yield s


def eval_args(task: dict[str, Path], url: str, *extra: Any) -> list[Any]:
    return ["eval", task["prompt"], "--data", task["data"], "--base-url", url, "--no-cache",
            "--batch-poll", "0.02", *extra]


def test_eval_batch_scores_as_live_and_says_what_it_submitted(task, server, tmp_path) -> None:
    env = {"OPENAI_API_KEY": SECRET}
    live = cli(*eval_args(task, server.url), "--json", env=env)
    assert live.code == 0, live
    batch = cli(*eval_args(task, server.url), "--json", "--batch", "--run-dir", tmp_path / "r",
                env=env)
    assert batch.code == 0, batch
    a, b = json.loads(live.stdout), json.loads(batch.stdout)
    assert [r["score"] for r in a["results"]] == [r["score"] for r in b["results"]]
    assert b["score"] == a["score"] == pytest.approx(39 / 40)
    assert b["usage"]["batch"]["lines"] == 40 and server.batch.created == 1
    assert b["usage"]["usd"] == pytest.approx(a["usage"]["usd"] / 2)
    assert "batch: submitted part-0001 as batch_fake1" in batch.stderr
    assert SECRET not in batch.stdout + batch.stderr
    assert SECRET not in (tmp_path / "r" / "batches" / "journal.json").read_text()


def test_eval_batch_on_an_engine_without_a_batch_api_runs_live_with_a_note(task) -> None:
    r = cli("eval", task["prompt"], "--data", task["data"], "--model", "mock", "--batch")
    assert r.code == 0, r
    assert "has no Batch API" in r.stderr and "evaluating live" in r.stderr
    assert "score:" in r.stdout


def test_batch_status_and_cancel(task, tmp_path) -> None:
    env = {"OPENAI_API_KEY": SECRET}
    with FakeOpenAIServer(reply, batch_delay=60) as server:
        run = tmp_path / "r"
        p = _start(eval_args(task, server.url, "--batch", "--run-dir", run), tmp_path)
        try:
            _wait_for_batch_id(run, p)
            status = cli("batch", "status", run, "--base-url", server.url, env=env)
            assert status.code == 0, status
            assert "part-0001  batch_fake1  in_progress  (40 requests" in status.stdout
            cancel = cli("batch", "cancel", run, "--base-url", server.url, env=env)
            assert cancel.code == 0, cancel
            assert "cancelled 1 open batch parts" in cancel.stdout
            out, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
        assert p.returncode == 1
        assert "error: batch batch_fake1 was cancelled" in err
        assert "Traceback" not in err
        assert server.batch.batches["batch_fake1"]["status"] == "cancelled"
        # the same command again submits anew
        server.batch.delay = 0
        again = cli(*eval_args(task, server.url, "--batch", "--run-dir", run), env=env)
        assert again.code == 0, again
        assert server.batch.created == 2


def test_batch_status_of_a_directory_without_a_journal_is_one_line(tmp_path) -> None:
    r = cli("batch", "status", tmp_path)
    assert r.code == 2
    assert r.stderr.startswith("error: ") and "no batch journal" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
def test_kill_9_while_a_batch_is_pending_resumes_the_same_batch(task, tmp_path) -> None:
    with FakeOpenAIServer(reply, batch_delay=3600) as server:
        run = tmp_path / "r"
        args = eval_args(task, server.url, "--batch", "--run-dir", run, "--json")
        p = _start(args, tmp_path)
        try:
            _wait_for_batch_id(run, p)
            time.sleep(0.2)  # it is polling now
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
        assert p.returncode == -signal.SIGKILL
        assert server.batch.created == 1
        server.batch.release()  # the provider finishes the batch while nobody watches
        resumed = _start(args, tmp_path)
        out, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err
        assert server.batch.created == 1  # polled, never submitted twice
        assert server.request_count == 0
        assert "batch: resuming part-0001 (batch_fake1, submitted)" in err
        assert json.loads(out)["score"] == pytest.approx(39 / 40)


def test_a_run_killed_after_creating_a_batch_finds_it_by_its_file(task, server, tmp_path) -> None:
    """Killed between the provider creating the batch and the journal recording its id."""
    env = {"OPENAI_API_KEY": SECRET}
    run = tmp_path / "r"
    first = cli(*eval_args(task, server.url, "--batch", "--run-dir", run), env=env)
    assert first.code == 0, first
    journal = BatchJournal(run)
    part = journal.parts[0]
    for k in ("batch_id", "output_file_id", "error_file_id"):
        part.pop(k, None)
    journal.update(part, status="uploaded")
    again = cli(*eval_args(task, server.url, "--batch", "--run-dir", run), env=env)
    assert again.code == 0, again
    assert server.batch.created == 1
    assert BatchJournal(run).parts[0]["batch_id"] == "batch_fake1"


def test_optimize_batch_eval_sends_validations_as_batches(counting, world_server, tmp_path
                                                          ) -> None:
    r = cli("optimize", counting["prompt"], "--train", counting["train"], "--val",
            counting["val"], "--steps", "1", "--batch-size", "2", "--base-url", world_server.url,
            "--no-cache", "--run-dir", tmp_path / "run", "--out", tmp_path / "out.prompt",
            "--batch-eval", "--batch-poll", "0.02", env={"OPENAI_API_KEY": SECRET})
    assert r.code == 0, r
    parts = BatchJournal(tmp_path / "run").parts
    assert parts and all(p["status"] == "completed" for p in parts)
    n_val = sum(1 for line in counting["val"].read_text().splitlines() if line.strip())
    assert parts[0]["lines"] == n_val  # the baseline: every validation example in a batch
    assert world_server.request_count > 0  # minibatches, feedback, rewrites: live
    assert "batch: 2 evaluations" in r.stderr  # the baseline and the step's validation


def _start(args: list[Any], cwd: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "TRACEGRAD_", "PYTEST_"))}
    env.update(OPENAI_API_KEY=SECRET, TRACEGRAD_CACHE_DIR=str(cwd / "cache"),
               PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-c", CLI_BOOT, *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_batch_id(run: Path, p: subprocess.Popen[str], timeout: float = 60) -> None:
    journal = run / "batches" / "journal.json"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if p.poll() is not None:
            raise AssertionError(f"the eval ended early: {p.communicate()}")
        if journal.exists() and '"batch_id"' in journal.read_text():
            return
        time.sleep(0.05)
    raise AssertionError("no batch id was recorded")


def test_run_dir_without_batch_is_a_usage_error(task) -> None:
    r = cli("eval", task["prompt"], "--data", task["data"], "--model", "mock", "--run-dir", "x")
    assert r.code == 2 and "error: --run-dir is only used with --batch" in r.stderr


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
def test_kill_9_during_a_batched_baseline_then_resume_polls_the_same_batch(counting, tmp_path
                                                                           ) -> None:
    from tracegrad.demo import CountingWorld

    with FakeOpenAIServer(CountingWorld().http_reply, batch_delay=3600) as server:
        run = tmp_path / "run"
        common = [counting["prompt"], "--train", counting["train"], "--val", counting["val"],
                  "--steps", "1", "--batch-size", "2", "--base-url", server.url, "--no-cache",
                  "--out", tmp_path / "out.prompt", "--batch-eval", "--batch-poll", "0.02"]
        p = _start(["optimize", *common, "--run-dir", run], tmp_path)
        try:
            _wait_for_batch_id(run, p)
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
        server.batch.release()
        server.batch.delay = 0
        resumed = _start(["optimize", *common, "--resume", run], tmp_path)
        out, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err
    assert "batch: resuming part-0001 (batch_fake1, submitted)" in err
    journal = BatchJournal(run)
    parts = journal.parts
    assert server.batch.created == len(parts) >= 2  # the baseline, then the step's validation
    baseline = journal.keys(parts[0])
    assert all(not baseline & journal.keys(p) for p in parts[1:])  # never submitted twice
