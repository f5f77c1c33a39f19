"""``tracegrad optimize`` end to end: real HTTP to a FakeOpenAIServer whose scripted world
answers forward, backward and optimizer requests, so the score can only rise if the loop
really carries feedback to the optimizer and the new prompt back to the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracegrad.promptfile import PromptFile
from tracegrad.testing import FakeOpenAIServer

from .conftest import SECRET, cli


def optimize_args(counting: dict[str, Path], server: FakeOpenAIServer, *extra: object) -> list:
    return ["optimize", counting["prompt"], "--train", counting["train"], "--val",
            counting["val"], "--base-url", server.url, "--model", "openai:fake-model",
            "--steps", "4", "--batch-size", "4", *extra]


def test_optimize_writes_out_keeps_original_and_a_complete_run(
        counting: dict[str, Path], world_server: FakeOpenAIServer, tmp_path: Path) -> None:
    original = counting["prompt"].read_bytes()
    out = tmp_path / "optimized.prompt"
    run_dir = tmp_path / "run"
    r = cli(*optimize_args(counting, world_server, "--out", out, "--run-dir", run_dir),
            env={"OPENAI_API_KEY": SECRET})
    assert r.code == 0, r
    # the original is untouched, the optimized file has the same front matter
    assert counting["prompt"].read_bytes() == original
    assert not counting["prompt"].with_name("object_counting.prompt.bak").exists()
    before, after = PromptFile.load(counting["prompt"]), PromptFile.load(out)
    assert out.read_text().startswith(before.prefix)
    assert after.body != before.body and after.fields == {"question"}
    assert "number words" in after.body  # the instruction derived from the feedback
    # the run directory is complete
    for name in ("config.json", "history.jsonl", "best.json", "report.html", "original.prompt",
                 "best.prompt"):
        assert (run_dir / name).is_file(), name
    best = json.loads((run_dir / "best.json").read_text())
    assert best["state"]["prompt"] == after.body
    assert (run_dir / "original.prompt").read_bytes() == original
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert history and history[0]["step"] == 1
    # the scores are printed: baseline -> best
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("score:"))
    baseline, best_score = (float(x) for x in line.split()[1:4:2])
    assert best_score > baseline
    assert best_score == pytest.approx(best["score"])
    assert f"prompt written: {out}" in r.stdout and f"run dir: {run_dir}" in r.stdout
    assert "calls:" in r.stdout and "tokens:" in r.stdout and "cost: $" in r.stdout
    # forward, backward and optimizer requests all went over HTTP
    texts = [json.dumps(b["messages"]) for b in world_server.requests]
    assert any("Inputs to give feedback on" in t for t in texts)
    assert any("current_value" in t for t in texts)
    # the key is sent, never shown or stored
    assert all(b["_authorized"] for b in world_server.requests)
    assert SECRET not in r.stdout + r.stderr
    for f in run_dir.iterdir():
        assert SECRET not in f.read_text(errors="replace"), f


def test_optimize_in_place_keeps_a_backup_and_json_is_one_object(
        counting: dict[str, Path], world_server: FakeOpenAIServer, tmp_path: Path) -> None:
    original = counting["prompt"].read_bytes()
    r = cli(*optimize_args(counting, world_server, "--run-dir", tmp_path / "run", "--json",
                           "--optimizer", "trace", "--no-cache"))
    assert r.code == 0, r
    data = json.loads(r.stdout)  # the whole of stdout is one JSON object
    assert data["improved"] is True
    assert data["best_score"] > data["baseline_score"]
    assert data["written"] == str(counting["prompt"])
    bak = counting["prompt"].with_name("object_counting.prompt.bak")
    assert data["backup"] == str(bak) and bak.read_bytes() == original
    assert PromptFile.load(counting["prompt"]).body != PromptFile.load(bak).body
    assert data["usage"]["calls"] == world_server.request_count
    assert data["run_dir"] == str(tmp_path / "run") and Path(data["report"]).is_file()


def test_resume_continues_a_finished_run(counting: dict[str, Path],
                                         world_server: FakeOpenAIServer, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out = tmp_path / "o.prompt"
    first = cli(*optimize_args(counting, world_server, "--run-dir", run_dir, "--steps", "1",
                               "--out", out, "--no-cache"))
    assert first.code == 0, first
    steps = len((run_dir / "history.jsonl").read_text().splitlines())
    again = cli(*optimize_args(counting, world_server, "--run-dir", run_dir, "--out", out))
    assert again.code == 2 and "--resume" in again.stderr
    resumed = cli(*optimize_args(counting, world_server, "--resume", run_dir, "--steps", "4",
                                 "--out", out, "--no-cache"))
    assert resumed.code == 0, resumed
    assert len((run_dir / "history.jsonl").read_text().splitlines()) > steps


def test_broken_front_matter_exits_2_names_the_line_and_writes_nothing(
        counting: dict[str, Path], world_server: FakeOpenAIServer, tmp_path: Path) -> None:
    p = counting["prompt"]
    text = p.read_text().replace("output: answer", "output: [answer")
    p.write_text(text)
    run_dir = tmp_path / "run"
    r = cli(*optimize_args(counting, world_server, "--run-dir", run_dir))
    assert r.code == 2, r
    line = text.splitlines().index("output: [answer") + 1
    err = " ".join(r.stderr.split())
    # YAML notices the unclosed list on the next line, and says where it started
    assert f"{p}:{line + 1}: invalid YAML" in err and f"started on line {line}" in err
    assert "Traceback" not in r.stdout + r.stderr
    assert r.stdout == ""
    assert p.read_text() == text
    assert not p.with_name("object_counting.prompt.bak").exists()
    assert not run_dir.exists()
    assert world_server.request_count == 0


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda t: t.replace("metric: numeric", "metrik: numeric"), "did you mean 'metric'"),
        (lambda t: t.replace("{{ question }}", "{{ question }} {{ hint }}"),
         "'hint', which is not declared"),
    ],
    ids=["unknown-key", "undeclared-field"],
)
def test_prompt_errors_exit_2_with_file_and_line(counting: dict[str, Path],
                                                 world_server: FakeOpenAIServer, change,
                                                 words: str) -> None:
    p = counting["prompt"]
    text = change(p.read_text())
    p.write_text(text)
    r = cli(*optimize_args(counting, world_server))
    assert r.code == 2, r
    err = " ".join(r.stderr.split())
    assert words in err
    bad_line = next(i for i, ln in enumerate(text.splitlines(), 1)
                    if "metrik" in ln or "hint" in ln)
    assert f"{p}:{bad_line}:" in err
    assert world_server.request_count == 0


def test_dataset_lacking_a_field_exits_2_with_file_and_line(
        counting: dict[str, Path], world_server: FakeOpenAIServer) -> None:
    rows = counting["val"].read_text().splitlines()
    rows[2] = json.dumps({"questoin": "I have a cat. How many animals do I have?", "answer": "1"})
    counting["val"].write_text("\n".join(rows) + "\n")
    r = cli(*optimize_args(counting, world_server))
    assert r.code == 2, r
    err = " ".join(r.stderr.split())
    template_line = next(i for i, ln in enumerate(counting["prompt"].read_text().splitlines(), 1)
                         if "{{ question }}" in ln)
    assert f"{counting['prompt']}:{template_line}:" in err
    assert f"{counting['val']}:3" in err and "'question'" in err
    assert world_server.request_count == 0


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--optimizer", "tdg"], "did you mean 'tgd'"),
        (["--out", "/no/such/dir/x.prompt"], "does not exist"),
        (["--resume", "."], "not a run directory"),
    ],
)
def test_bad_options_exit_2(counting: dict[str, Path], world_server: FakeOpenAIServer,
                            args: list[str], words: str) -> None:
    r = cli(*optimize_args(counting, world_server, *args))
    assert r.code == 2, r
    assert words in " ".join(r.stderr.split())
    assert world_server.request_count == 0


def test_missing_key_without_base_url_exits_2(counting: dict[str, Path]) -> None:
    r = cli("optimize", counting["prompt"], "--train", counting["train"])
    assert r.code == 2, r
    assert "OPENAI_API_KEY" in r.stderr and "--base-url" in r.stderr


def test_budget_too_small_for_the_baseline_exits_1(counting: dict[str, Path],
                                                   world_server: FakeOpenAIServer,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "o.prompt"
    r = cli(*optimize_args(counting, world_server, "--model", "openai:gpt-4o",
                           "--budget-usd", "0.000001", "--out", out, "--run-dir",
                           tmp_path / "run", "--no-cache"))
    assert r.code == 1, r
    assert "budget" in r.stderr and "--budget-usd" in r.stderr
    assert not out.exists()
    # the meter refused every call before sending it, including calls of examples that were
    # already running when the budget ran out
    assert world_server.request_count == 0, world_server.requests


def test_budget_stop_after_the_baseline_is_a_clean_exit(counting: dict[str, Path],
                                                        world_server: FakeOpenAIServer,
                                                        tmp_path: Path) -> None:
    # gpt-4o is priced; the meter reserves each call's worst case before sending, so this
    # budget pays for the baseline but not for the first optimizer call
    original = counting["prompt"].read_bytes()
    r = cli(*optimize_args(counting, world_server, "--model", "openai:gpt-4o",
                           "--budget-usd", "0.016", "--concurrency", "1", "--run-dir",
                           tmp_path / "run", "--json", "--no-cache"))
    assert r.code == 0, r
    data = json.loads(r.stdout)
    assert data["stopped_reason"] == "budget"
    assert data["baseline_score"] is not None and data["improved"] is False
    assert 0 < data["usage"]["usd"] <= 0.016
    assert "budget ran out" in r.stderr
    assert counting["prompt"].read_bytes() == original
    assert (tmp_path / "run" / "best.json").is_file()


def test_ctrl_c_exits_130_and_says_how_to_resume(counting: dict[str, Path],
                                                 world_server: FakeOpenAIServer, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import tracegrad.train.trainer as trainer

    real_step = trainer.Trainer._step

    def interrupted(self, step):  # Ctrl-C arrives during the second step
        if step == 2:
            raise KeyboardInterrupt
        return real_step(self, step)

    monkeypatch.setattr(trainer.Trainer, "_step", interrupted)
    run_dir = tmp_path / "run"
    r = cli(*optimize_args(counting, world_server, "--run-dir", run_dir, "--no-cache"))
    assert r.code == 130, r
    assert "interrupted" in r.stderr and f"--resume {run_dir}" in " ".join(r.stderr.split())
    assert (run_dir / "state.json").is_file() and (run_dir / "config.json").is_file()
    state = json.loads((run_dir / "state.json").read_text())
    assert state["stopped_reason"] == "interrupted" and state["step"] == 1


def test_tgd_batched_needs_fewer_backward_calls_and_still_improves(
        counting: dict[str, Path], world_server: FakeOpenAIServer, tmp_path: Path) -> None:
    def backward_calls() -> int:
        return sum("Inputs to give feedback on" in json.dumps(b["messages"])
                   for b in world_server.requests)

    r = cli(*optimize_args(counting, world_server, "--out", tmp_path / "a.prompt", "--run-dir",
                           tmp_path / "a", "--json", "--no-cache", "--steps", "1"))
    assert r.code == 0, r
    per_example = backward_calls()
    before = world_server.request_count
    r = cli(*optimize_args(counting, world_server, "--out", tmp_path / "b.prompt", "--run-dir",
                           tmp_path / "b", "--json", "--no-cache", "--steps", "1",
                           "--optimizer", "tgd-batched"))
    assert r.code == 0, r
    assert world_server.request_count > before
    batched = backward_calls() - per_example
    assert 1 <= batched < per_example
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert "tgd-batched" in json.dumps(config)
    # one backward request covered several runs of the prompt
    assert any("## Run #2" in json.dumps(b["messages"]) for b in world_server.requests)


def _demos_world(body: dict) -> str:
    """A task model that writes the expected 'A<n>' for a 'hard' question only when shown
    a demo (an earlier assistant turn); every rewrite request gets an unusable reply."""
    import re

    messages = body.get("messages") or []
    last = str(messages[-1].get("content", "")) if messages else ""
    if "Question:" not in last or "current_value" in last or "feedback" in last.lower():
        return "no usable reply"
    n = re.search(r"(\d+)", last).group(1)
    shown = any(m.get("role") == "assistant" for m in messages[:-1])
    return f"A{n}" if "easy" in last or shown else f"the answer is {n}"


def test_a_prompt_file_asking_for_demos_gets_them_chosen_and_written_back(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    prompt = work / "qa.prompt"
    prompt.write_text("---\n# keep this comment\ninput: [question]\noutput: answer\n"
                      "metric: exact_match\ndemos: 2\nparams:\n  temperature: 0\n---\n"
                      "Question: {{ question }}\n")
    for split, offset in (("train", 0), ("val", 20)):
        rows = [{"question": f"{kind} {i}", "answer": f"A{i}"}
                for i in range(offset, offset + 6) for kind in ("easy", "hard")]
        (work / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with FakeOpenAIServer(_demos_world) as server:
        r = cli("optimize", prompt, "--train", work / "train.jsonl", "--val",
                work / "val.jsonl", "--base-url", server.url, "--model", "openai:fake-model",
                "--steps", "3", "--batch-size", "4", "--run-dir", tmp_path / "run",
                env={"OPENAI_API_KEY": SECRET})
    assert r.code == 0, r
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("score:"))
    baseline, best = (float(x) for x in line.split()[1:4:2])
    assert (baseline, best) == (0.5, 1.0)
    text = prompt.read_text()
    assert text.startswith("---\n# keep this comment\ninput: [question]\n")
    assert text.endswith("params:\n  temperature: 0\n---\nQuestion: {{ question }}\n")
    after = PromptFile.load(prompt)
    assert after.demos_max == 2 and 1 <= len(after.demos) <= 2
    assert all(d["input"].startswith("Question: easy") for d in after.demos)
    # the file with its demos runs again as written: the demos are sent as turns
    assert after.prefix.count("examples:") == 1


def test_bad_demos_key_is_an_input_error_with_its_line(tmp_path: Path) -> None:
    prompt = tmp_path / "bad.prompt"
    prompt.write_text("---\ninput: [q]\noutput: a\ndemos: {max: 0}\n---\n{{ q }}\n")
    data = tmp_path / "d.jsonl"
    data.write_text('{"q": "x", "a": "y"}\n')
    r = cli("eval", prompt, "--data", data, "--model", "openai:fake-model")
    assert r.code == 2, r
    assert f"{prompt}:4:" in r.stderr and "'max' must be a whole number" in r.stderr
