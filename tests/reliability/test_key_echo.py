"""Issue 12 section 3: a server that echoes the ``Authorization`` header into its replies
must not get the API key onto the disk or the terminal.

The server quotes "Bearer sk-..." before every answer, in every piece of feedback and in
every rewrite -- inside the new value of the first one, so that a candidate holding the key
is proposed (and must be rejected as a constraint violation), beside the value later on, so
that the run still improves the prompt and every file kind gets written. Afterwards every
byte tracegrad wrote (run directory, cache, prompt file and its .bak, best.prompt,
report.html, calls.jsonl) and everything it printed is searched for the key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tracegrad.llm import LLM
from tracegrad.promptfile import PromptFile, backup_path
from tracegrad.train import optimize

from .reliability_harness import (
    MODEL,
    SCENARIOS,
    SECRET,
    CLIResult,
    cli_env,
    copy_counting,
    has_traceback,
    optimize_args,
    run_cli,
    world_server,
)

KEY_ECHO = next(s for s in SCENARIOS if s.name == "key-echo")
# the key, and the parts a careless redaction might leave behind
FRAGMENTS = (SECRET, SECRET[3:], SECRET[-12:])


def leaks(text: str) -> list[str]:
    return [f for f in FRAGMENTS if f in text]


def files_leaking(root: Path) -> dict[str, list[str]]:
    """Every file under ``root`` that holds the key (binary ones too: SQLite pages, WAL)."""
    found = {}
    for f in root.rglob("*"):
        if f.is_file():
            hits = leaks(f.read_bytes().decode("utf-8", errors="replace"))
            if hits:
                found[str(f.relative_to(root))] = hits
    return found


def rejected_for_a_secret(run_dir: Path) -> list[str]:
    """The history's rejection reasons that name a secret."""
    text = (run_dir / "history.jsonl").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if "secret" in line.lower()]


def _optimize_cli(task: dict[str, Path], url: str, run_dir: Path, tmp: Path,
                  *extra: str, optimizer: str = "tgd") -> CLIResult:
    r = run_cli(optimize_args(task, url, run_dir, *extra, steps=3, optimizer=optimizer),
                cli_env(tmp))
    assert r.code == 0 and r.exception is None and not has_traceback(r.output), r
    return r


@pytest.mark.parametrize("json_flag", [True, False], ids=["json", "text"])
def test_a_key_echoing_server_gets_the_key_nowhere_through_the_cli(json_flag: bool,
                                                                    tmp_path: Path) -> None:
    task = copy_counting(tmp_path / "task")
    run_dir = tmp_path / "run"
    extra = ("--json",) if json_flag else ()
    evaluate = ["eval", task["prompt"], "--data", task["val"], "--model", MODEL, "--show",
                "50", *extra]
    with world_server(KEY_ECHO) as (server, _):
        # before the run: the original prompt fails, so eval prints the echoing outputs
        before = run_cli([*evaluate, "--base-url", server.url], cli_env(tmp_path))
        assert leaks(before.output) == [] and "[REDACTED]" in before.stdout, before
        r = _optimize_cli(task, server.url, run_dir, tmp_path, *extra)
        assert server.requests and all(b["_authorized"] for b in server.requests)
        others = [before, *(run_cli(args, cli_env(tmp_path)) for args in (
            ["report", run_dir],
            [*evaluate, "--base-url", server.url],
            ["cache", "info", *extra],
        ))]
    # the run was the one the issue describes: the key came back, and the prompt improved
    calls = (run_dir / "calls.jsonl").read_text(encoding="utf-8")
    assert "Authorization: Bearer [REDACTED]" in calls, "the server did echo the header"
    if json_flag:
        assert json.loads(r.stdout)["written"] == str(task["prompt"])
    for p in (task["prompt"], backup_path(task["prompt"]), run_dir / "best.prompt",
              run_dir / "report.html", run_dir / "history.jsonl", tmp_path / "cache"):
        assert p.exists(), p
    assert rejected_for_a_secret(run_dir), "the candidate holding the key was not rejected"
    info = others[-1].stdout  # the echoing replies were used, not cached, and counted
    assert (json.loads(info)["skipped_secret"] > 0) if json_flag else "held a secret" in info
    for result in (r, *others):
        assert result.code == 0, result
        assert leaks(result.stdout + result.stderr) == [], result
    assert files_leaking(tmp_path) == {}


@pytest.mark.parametrize("optimizer", ["trace", "opro"])
def test_other_optimizers_reject_a_candidate_holding_the_key(optimizer: str,
                                                            tmp_path: Path) -> None:
    task = copy_counting(tmp_path / "task")
    run_dir = tmp_path / "run"
    with world_server(KEY_ECHO) as (server, _):
        r = _optimize_cli(task, server.url, run_dir, tmp_path, "--json", optimizer=optimizer)
    assert leaks(r.output) == [], r
    assert rejected_for_a_secret(run_dir), optimizer
    assert files_leaking(tmp_path) == {}


def test_a_key_echoing_server_gets_the_key_nowhere_through_the_api(tmp_path: Path) -> None:
    """The key given as ``api_key=`` only (not in the environment), so only the engine
    knows it; the best values and the result must not hold it either."""
    task = copy_counting(tmp_path / "task")
    run_dir = tmp_path / "run"
    pf = PromptFile.load(task["prompt"])
    with world_server(KEY_ECHO) as (server, _), pytest.MonkeyPatch.context() as mp:
        mp.delenv("OPENAI_API_KEY", raising=False)
        engine = LLM(MODEL, base_url=server.url, api_key=SECRET, backoff_base=0.005,
                     cache=tmp_path / "cache" / "cache.sqlite3",
                     call_log=run_dir / "calls.jsonl")
        result: Any = optimize(pf.to_module(engine), pf.load_dataset(task["train"]),
                               pf.load_dataset(task["val"]), metric=pf.metric_fn(), steps=3,
                               batch_size=3, engine=engine, run_dir=run_dir, progress=False)
    assert result.steps_done == 3
    assert leaks(json.dumps(result.to_dict(), default=str)) == []
    assert leaks(json.dumps(result.best_state)) == []
    assert rejected_for_a_secret(run_dir)
    assert files_leaking(tmp_path) == {}
