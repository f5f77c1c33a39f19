"""estimate, eval, report, cache, demo and help: what each prints, and what each must not do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tracegrad.testing import FakeOpenAIServer

from .conftest import cli

COMMANDS = ["optimize", "eval", "estimate", "report", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself_with_an_example(command: str) -> None:
    r = cli(command, "--help")
    assert r.code == 0, r
    assert "Example" in r.stdout and f"tracegrad {command}" in r.stdout


def test_no_arguments_shows_help() -> None:
    r = cli()
    assert "optimize" in r.stdout + r.stderr and "demo" in r.stdout + r.stderr


# -- estimate ---------------------------------------------------------------------------------


def test_estimate_makes_no_request_and_bounds_a_real_run(
        counting: dict[str, Path], world_server: FakeOpenAIServer, tmp_path: Path) -> None:
    env = {"OPENAI_BASE_URL": world_server.url, "OPENAI_API_KEY": "sk-unused-0123456789"}
    r = cli("estimate", counting["prompt"], "--train", counting["train"], "--val",
            counting["val"], "--steps", "3", "--batch-size", "4", "--json", env=env)
    assert r.code == 0, r
    assert world_server.request_count == 0
    est = json.loads(r.stdout)
    assert est["calls_made"] == 0
    rows = {row["purpose"]: row for row in est["rows"]}
    assert rows["baseline"]["calls"] == 15  # one per validation example
    assert rows["forward"]["calls"] == 3 * 4
    # a step whose minibatch is all right makes no rewrite and no validation
    assert 0 < rows["optimizer"]["calls"] <= 3
    assert 0 < rows["validation"]["calls"] <= 3 * 15
    assert est["total"]["usd"] > 0  # gpt-4o-mini is in the pricing table
    assert est["upper_usd"] >= est["total"]["usd"]
    assert est["suggested_budget_usd"] >= est["upper_usd"]

    # the same run for real makes no more calls than estimated
    run = cli("optimize", counting["prompt"], "--train", counting["train"], "--val",
              counting["val"], "--steps", "3", "--batch-size", "4", "--base-url",
              world_server.url, "--run-dir", tmp_path / "run", "--json", "--no-cache",
              "--out", tmp_path / "o.prompt")
    assert run.code == 0, run
    assert est["range"]["low"]["calls"] <= world_server.request_count
    assert world_server.request_count <= est["range"]["high"]["calls"]


def test_estimate_text_output_and_unpriced_models(counting: dict[str, Path]) -> None:
    r = cli("estimate", counting["prompt"], "--train", counting["train"], "--optimizer", "trace",
            "--model", "openai:my-local-model")
    assert r.code == 0, r
    assert "no calls were made" in r.stdout and "total" in r.stdout
    assert "no price known for openai:my-local-model" in " ".join(r.stdout.split())
    assert "backward" not in [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    j = cli("estimate", counting["prompt"], "--train", counting["train"], "--steps", "5",
            "--batch-size", "3", "--json")
    rows = {row["purpose"]: row["calls"] for row in json.loads(j.stdout)["rows"]}
    # without --val there is no baseline run and rewrites are checked on the minibatch
    assert "baseline" not in rows and rows["forward"] == 5 * 3
    assert 0 < rows["validation"] <= 5 * 3 and 0 < rows["backward"] <= 5 * 3
    assert 0 < rows["optimizer"] <= 5
    # at the low end every minibatch is already right: only the forward calls are made
    assert json.loads(j.stdout)["range"]["low"]["calls"] == 5 * 3


def test_estimate_rejects_a_broken_prompt_file(counting: dict[str, Path]) -> None:
    counting["prompt"].write_text("no front matter {{ question }}\n")
    r = cli("estimate", counting["prompt"], "--train", counting["train"])
    assert r.code == 2 and f"{counting['prompt']}:1:" in " ".join(r.stderr.split())


# -- eval -------------------------------------------------------------------------------------


def test_eval_scores_and_lists_failures(counting: dict[str, Path],
                                        world_server: FakeOpenAIServer) -> None:
    r = cli("eval", counting["prompt"], "--data", counting["val"], "--base-url",
            world_server.url, "--no-cache", "--json")
    assert r.code == 0, r
    data = json.loads(r.stdout)
    assert data["n"] == 15 and world_server.request_count == 15
    wrong = [x for x in data["results"] if x["score"] < 1]
    assert 0 < len(wrong) == data["failures"] < 15
    assert data["score"] == pytest.approx(1 - len(wrong) / 15)
    assert all("expected" in x["explanation"].lower() for x in wrong)

    text = cli("eval", counting["prompt"], "--data", counting["val"], "--base-url",
               world_server.url, "--show", "2")
    assert text.code == 0, text
    assert text.stdout.startswith(f"score: {data['score']:.3f} on 15 examples")
    assert text.stdout.count("  expected: ") == 2
    assert f"and {len(wrong) - 2} more" in text.stdout


# -- report -----------------------------------------------------------------------------------


def test_report_rewrites_the_html(counting: dict[str, Path], world_server: FakeOpenAIServer,
                                  tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    r = cli("optimize", counting["prompt"], "--train", counting["train"], "--val",
            counting["val"], "--base-url", world_server.url, "--steps", "1", "--run-dir",
            run_dir, "--out", tmp_path / "o.prompt", "--no-cache")
    assert r.code == 0, r
    (run_dir / "report.html").unlink()
    rep = cli("report", run_dir)
    assert rep.code == 0, rep
    assert rep.stdout.strip() == str(run_dir / "report.html")
    assert "<html" in (run_dir / "report.html").read_text().lower()


def test_report_on_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    r = cli("report", tmp_path)
    assert r.code == 2 and "not a run directory" in r.stderr
    assert cli("report", tmp_path / "nope").code == 2


# -- cache ------------------------------------------------------------------------------------


def test_cache_info_and_clear(counting: dict[str, Path], world_server: FakeOpenAIServer,
                              tmp_path: Path) -> None:
    empty = cli("cache", "info", "--json")
    assert empty.code == 0 and json.loads(empty.stdout)["entries"] == 0
    r = cli("eval", counting["prompt"], "--data", counting["val"], "--base-url",
            world_server.url)
    assert r.code == 0, r
    info = json.loads(cli("cache", "info", "--json").stdout)
    assert info["entries"] == 15 and info["path"].startswith(str(tmp_path / "cache-dir"))
    again = cli("eval", counting["prompt"], "--data", counting["val"], "--base-url",
                world_server.url)
    assert again.code == 0 and world_server.request_count == 15  # all answered from cache
    assert "15 from cache" in again.stdout
    cleared = cli("cache", "clear")
    assert cleared.code == 0 and "removed 15" in cleared.stdout
    assert json.loads(cli("cache", "info", "--json").stdout)["entries"] == 0


def test_cache_info_states_the_reply_cap_before_and_after_the_file_exists(
        counting: dict[str, Path], world_server: FakeOpenAIServer, monkeypatch) -> None:
    monkeypatch.setenv("TRACEGRAD_CACHE_MAX_REPLY_BYTES", "2048")
    before = json.loads(cli("cache", "info", "--json").stdout)
    assert before["exists"] is False and before["max_reply_bytes"] == 2048
    assert before["skipped_large"] == 0
    cli("eval", counting["prompt"], "--data", counting["val"], "--base-url", world_server.url)
    text = cli("cache", "info").stdout
    assert "largest reply kept: 2 KiB" in text and "used but not stored: 0" in text


# -- demo -------------------------------------------------------------------------------------


def test_demo_improves_offline_and_says_simulated(tmp_path: Path) -> None:
    run_dir = tmp_path / "demo"
    r = cli("demo", "--run-dir", run_dir, "--json")
    assert r.code == 0, r
    assert "SIMULATED" in r.stderr
    data = json.loads(r.stdout)
    assert data["simulated"] is True
    assert data["best_score"] > data["baseline_score"]
    assert data["after"] != data["before"] and "{{ question }}" in data["after"]
    # the loop really ran: feedback and rewrites were requested from the simulated model
    assert data["calls_by_purpose"]["backward"] > 0 and data["calls_by_purpose"]["optimizer"] > 0
    assert (run_dir / "history.jsonl").is_file() and (run_dir / "report.html").is_file()
    assert (run_dir / "counting.prompt.bak").is_file()
    assert data["after"] in (run_dir / "counting.prompt").read_text()
    again = cli("demo", "--run-dir", run_dir)
    assert again.code == 2 and "already holds a run" in again.stderr


def test_demo_console_script_prints_simulated_and_a_diff(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("tracegrad")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c",
                                            "from tracegrad.cli import app; app()"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI")}
    p = subprocess.run([*cmd, "demo", "--run-dir", str(tmp_path / "d")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("SIMULATED") and "SIMULATED" in p.stderr
    diff = p.stdout.split("diff:", 1)[1].split("validation score", 1)[0]
    added = [ln.strip()[1:] for ln in diff.splitlines() if ln.strip().startswith("+") and not ln.strip().startswith("+++")]
    assert added and all(a.strip() for a in added)  # the diff shows the learned instructions
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("score:"))
    before, after = float(line.split()[1]), float(line.split()[3])
    assert after > before
    assert "Traceback" not in p.stderr


def test_judge_metric_grades_with_the_optimizer_model(tmp_path: Path) -> None:
    prompt = tmp_path / "summary.prompt"
    prompt.write_text(
        "---\nmodel: openai:task-model\noptimizer_model: openai:judge-model\n"
        "input: [text]\noutput: summary\n"
        "metric:\n  judge: Is the summary faithful and under 20 words?\n---\n"
        "Summarize: {{ text }}\n")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"text {i}", "summary": f"s{i}"}) + "\n"
                            for i in range(3)))
    with FakeOpenAIServer({r"Rubric:": "Score: 7\nReason: mostly faithful.",
                           r"Summarize": "A short summary."}) as server:
        r = cli("eval", prompt, "--data", data, "--base-url", server.url, "--json",
                "--no-cache")
        assert r.code == 0, r
        models = sorted(b["model"] for b in server.requests)
    out = json.loads(r.stdout)
    assert out["score"] == pytest.approx(0.7)
    assert out["metric"].startswith("judge: Is the summary faithful")
    assert models == ["judge-model"] * 3 + ["task-model"] * 3


def test_timeout_and_retries_reach_the_engine(monkeypatch) -> None:
    import tracegrad.cli as cli

    seen: dict = {}

    def fake_llm(spec, **kw):
        seen.update(kw)
        raise SystemExit(0)

    import tracegrad.llm.factory as factory

    monkeypatch.setattr(factory, "LLM", fake_llm)
    from typer.testing import CliRunner

    root = Path(__file__).resolve().parents[2] / "prompts"
    CliRunner().invoke(cli.app, [
        "eval", str(root / "support_intent.prompt"), "--data",
        str(root / "support_intent.val.jsonl"), "--model", "openai:x", "--base-url",
        "http://127.0.0.1:9/v1", "--timeout", "2.5", "--max-retries", "1"])
    assert seen.get("timeout") == 2.5 and seen.get("max_retries") == 1


def test_eval_counts_replies_cut_at_the_token_limit(counting: dict[str, Path],
                                                    world_server: FakeOpenAIServer) -> None:
    world_server.inject("length", times=3)
    r = cli("eval", counting["prompt"], "--data", counting["val"], "--base-url",
            world_server.url, "--no-cache")
    assert r.code == 0, r
    assert "replies cut at the token limit: 3" in r.stdout
    data = json.loads(cli("eval", counting["prompt"], "--data", counting["val"], "--base-url",
                          world_server.url, "--no-cache", "--json").stdout)
    assert data["usage"]["cut_replies"] == 0  # the faults were used up by the first run


def test_help_shows_flags_as_flags_and_val_has_no_short_form() -> None:
    text = cli("optimize", "--help").stdout
    json_line = next(ln for ln in text.splitlines() if "--json" in ln)
    assert "<bool>" not in json_line
    assert "-v " not in next(ln for ln in text.splitlines() if "--val" in ln and "<path>" in ln)


def test_demo_says_why_it_stopped_early(tmp_path: Path) -> None:
    r = cli("demo", "--steps", "8", "--run-dir", tmp_path / "demo")
    assert r.code == 0, r
    assert "stopped after 3 steps of 8: the validation score reached 1.0" in r.stdout


@pytest.mark.parametrize("command", [["optimize"], ["eval"], ["estimate"], ["demo"], [],
                                     ["cache", "clear"]])
def test_no_flag_is_shown_as_taking_a_value(command: list[str]) -> None:
    text = cli(*command, "--help", env={"COLUMNS": "150"}).stdout
    flags = [ln for ln in text.splitlines()
             if any(f in ln for f in ("--help ", "--json ", "--no-cache ", "--quiet "))]
    assert flags and all("<bool>" not in ln for ln in flags), flags


def test_the_cli_concurrency_default_is_the_library_default():
    """The commands spell the default out (`--help` must not import the LLM layer); it
    must stay the engine's ceiling, DEFAULT_MAX_CONCURRENCY."""
    import inspect

    from tracegrad.cli.estimate import estimate
    from tracegrad.cli.evaluate import eval_
    from tracegrad.cli.optimize import optimize
    from tracegrad.llm.limits import DEFAULT_MAX_CONCURRENCY

    for command in (estimate, eval_, optimize):
        default = inspect.signature(command).parameters["concurrency"].default
        assert default == DEFAULT_MAX_CONCURRENCY, command.__name__
