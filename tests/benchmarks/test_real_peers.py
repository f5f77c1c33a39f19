"""run.py's peer frameworks (DSPy GEPA, DSPy MIPROv2, TextGrad).

Always on: the dispatch, the arguments, the budget hand-over and the JSONL lines, with a stub
peer runner (plain Python, no dspy); and the peers' metrics agreeing with tracegrad's.
Skipped unless a peers venv is there (CI has none): every real peer runner end to end
against the fake server on the shipped sample. Everything these tests produce is SIMULATED.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
DATA = Path(__file__).resolve().parent / "data"
SAMPLE = DATA / "bbh_object_counting_sample.json"
sys.path.insert(0, str(BENCH))

from real import peer_common, peers, smoke  # noqa: E402
from real import run as real_run  # noqa: E402

from tracegrad.testing import FakeOpenAIServer  # noqa: E402
from tracegrad.train.metrics import exact_match, numeric  # noqa: E402

PEERS = ("dspy-gepa", "dspy-mipro", "textgrad")

STUB = textwrap.dedent('''
    """A stand-in peer runner: echoes what it was given, reports fixed usage."""
    import json, sys
    sys.path.insert(0, {common!r})
    import peer_common as pc
    args = sys.argv[1:]
    cfg = pc.read_config(args[args.index("--config") + 1])
    if cfg["options"].get("crash"):
        sys.exit(3)
    res = pc.result_skeleton(cfg)
    res.update({{"test_before": 0.25, "test_after": 0.75, "metric_calls": cfg["metric_budget"],
                "llm_calls": 3, "tokens": 3000, "stopped_reason": "stub",
                "usage": {{"optimize": {{"gpt-4o-mini": {{"calls": 2, "prompt_tokens": 1000,
                                                         "completion_tokens": 1000}}}},
                          "eval": {{"gpt-4o": {{"calls": 1, "prompt_tokens": 1000,
                                               "completion_tokens": 0}}}}}},
                "settings": {{"argv": args, "config": {{k: v for k, v in cfg.items()
                                                      if k not in ("train", "val", "test")}},
                             "split": [len(cfg[k]) for k in ("train", "val", "test")]}}}})
    pc.write_result(args[args.index("--out") + 1], res)
''')


@pytest.fixture
def stub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "stub_peer.py"
    path.write_text(STUB.format(common=str(BENCH / "real")))
    for fw in PEERS:
        _, extra, need = peers.RUNNERS[fw]
        monkeypatch.setitem(peers.RUNNERS, fw, (path, extra, need))
    return path


def _run(tmp_path: Path, frameworks: str, *extra: str, url: str | None = None) -> tuple[int, list]:
    out = tmp_path / "results.jsonl"
    argv = ["--task", "object_counting", "--frameworks", frameworks, "--model",
            "openai:gpt-4o-mini", "--optimizer-model", "openai:gpt-4o", "--steps", "2",
            "--data", str(SAMPLE), "--workdir", str(tmp_path / "work"), "--out", str(out),
            "--yes", "--simulated", "--timeout", "300", *extra]
    if url:
        argv += ["--base-url", url]
    rc = real_run.main(argv)
    lines = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
    return rc, lines


def test_peer_metrics_agree_with_tracegrad() -> None:
    cases = [("8", "8"), ("There are 12 of them.", "12"), ("Answer: 1,234", "1234"),
             ("I think 7, no wait, 9", "9"), ("nothing", "3"), ("3.0", "3"), ("-4", "4"),
             ("14 apples", "15"), ("Answer: $VALUE 5.", "5")]
    for pred, want in cases:
        assert peer_common.numeric(pred, want)[0] == numeric(pred, want)[0], (pred, want)
    for pred, want in [("apple banana", "apple banana"), (" Apple  Banana. ", "apple banana"),
                       ("banana apple", "apple banana"), ("'apple'", "apple")]:
        assert peer_common.exact_match(pred, want)[0] == exact_match(pred, want)[0], pred


def test_dispatch_hands_each_peer_the_split_models_and_tracegrad_budget(
        tmp_path: Path, stub: Path) -> None:
    with FakeOpenAIServer(smoke.make_reply(smoke.sample_answers())) as srv:
        rc, lines = _run(tmp_path, "tracegrad," + ",".join(PEERS), "--peers-python",
                         sys.executable, "--budget-usd", "0.5", url=srv.url)
        url = srv.url
    assert rc == 0
    assert [r["framework"] for r in lines] == ["tracegrad", *PEERS]
    assert all(r["simulated"] and "SIMULATED" in r["note"] for r in lines)
    tg = lines[0]
    assert tg["metric_calls"] > 0 and tg["llm_calls"] > 0 and tg["usd"] > 0
    assert tg["test_after"] == 1.0  # the scripted world rewards the improved prompt
    for r in lines[1:]:
        s = r["settings"]
        assert r["metric_budget"] == tg["metric_calls"] == r["metric_calls"]
        assert r["metric_budget_source"] == "tracegrad's run in this invocation"
        assert s["split"] == tg["split"] == [4, 9, 11]
        cfg = s["config"]
        assert (cfg["model"], cfg["optimizer_model"]) == ("openai:gpt-4o-mini", "openai:gpt-4o")
        assert cfg["base_url"] == url and cfg["budget_usd"] == 0.5
        assert (cfg["steps"], cfg["batch_size"], cfg["metric"]) == (2, 3, "numeric")
        assert cfg["prices"]["gpt-4o-mini"] == {"input": 0.15, "output": 0.6}
        # dollars from tracegrad's table: 1k in + 1k out on gpt-4o-mini, 1k in on gpt-4o
        assert r["usd"] == pytest.approx((1000 * 0.15 + 1000 * 0.6 + 1000 * 2.5) / 1e6)
        assert r["usd_by_phase"]["eval"] == pytest.approx(0.0025)
        assert (r["test_before"], r["test_after"], r["llm_calls"]) == (0.25, 0.75, 3)
    argvs = {r["framework"]: r["settings"]["argv"] for r in lines[1:]}
    assert argvs["dspy-gepa"][:2] == ["--optimizer", "gepa"]
    assert argvs["dspy-mipro"][:2] == ["--optimizer", "mipro"]
    assert argvs["textgrad"][0] == "--config"


def test_without_tracegrad_the_budget_is_its_estimate_or_metric_calls(
        tmp_path: Path, stub: Path) -> None:
    rc, lines = _run(tmp_path, "textgrad", "--peers-python", sys.executable)
    assert rc == 0 and lines[0]["metric_budget_source"] == "tracegrad's estimate for --steps"
    # the sample: 9 val baseline + 2 steps x (3 forward + 9 val)
    assert lines[0]["metric_budget"] == 33
    rc, lines = _run(tmp_path / "b", "dspy-gepa,textgrad", "--peers-python", sys.executable,
                     "--metric-calls", "17", "--gepa-auto", "light", "--dspy-module", "cot")
    assert rc == 0 and [r["metric_budget"] for r in lines] == [17, 17]
    assert lines[0]["settings"]["config"]["options"] == {"dspy_module": "cot",
                                                         "gepa_auto": "light"}


def test_missing_venv_unknown_framework_and_crashing_runner(
        tmp_path: Path, stub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rc, lines = _run(tmp_path, "dspy-gepa", "--peers-python", str(tmp_path / "no-python"))
    assert rc == 0 and "no peers venv with dspy" in lines[0]["skipped"]
    out = tmp_path / "x.jsonl"
    assert real_run.main(["--frameworks", "tracegrad,dspy", "--out", str(out)]) == 2
    assert real_run.main(["--frameworks", "textgrad", "--steps", "0", "--out", str(out)]) == 2
    assert not out.exists()
    monkeypatch.setattr(real_run, "_peer", lambda fw, args, rows, done, planned: peers.run_peer(
        fw, args, rows, task=real_run.TASKS[args.task], metric_budget=5,
        python=Path(sys.executable), options={"crash": True}))
    rc, lines = _run(tmp_path / "c", "textgrad,dspy-mipro")
    assert rc == 1 and [r["framework"] for r in lines] == ["textgrad", "dspy-mipro"]
    assert all("exited 3 without a result" in r["error"] for r in lines)


def test_mipro_plan_fits_the_budget() -> None:
    from real.peer_dspy import plan_mipro

    p = plan_mipro(1336, 50, 100)  # tracegrad's 12 steps on the published split
    assert p["minibatch"] and p["minibatch_size"] == 35 and p["fits_budget"]
    assert p["planned_metric_calls"] <= 1336 < p["planned_metric_calls"] + 135
    p = plan_mipro(500, 10, 40)  # a valset of 50 or fewer is not minibatched
    assert p["minibatch"] is False and p["planned_metric_calls"] <= 500
    p = plan_mipro(40, 4, 9)  # a small budget: fewer candidates, so bootstrapping fits
    assert p["num_candidates"] < 6 and p["fits_budget"] and p["num_trials"] >= 1
    assert plan_mipro(10, 4, 9)["fits_budget"] is False  # one trial at least, flagged


# -- the real peers, when their venv is there ---------------------------------------

def _peers_ready() -> Path | None:
    py = peers.peers_python(None)
    if py is None:
        return None
    r = subprocess.run([str(py), "-c", "import dspy, textgrad, optuna"], capture_output=True,
                       timeout=120, env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    return py if r.returncode == 0 else None


@pytest.fixture(scope="module")
def peers_py() -> Path:
    py = _peers_ready()
    if py is None:
        pytest.skip("no peers venv with dspy, textgrad and optuna (set TRACEGRAD_PEERS_PYTHON "
                    "or build benchmarks/.real-peers-venv; CI has none)")
    return py


@pytest.mark.timeout(900)
def test_every_peer_runs_end_to_end_against_the_fake_server(tmp_path: Path,
                                                           peers_py: Path) -> None:
    with FakeOpenAIServer(smoke.make_reply(smoke.sample_answers())) as srv:
        rc, lines = _run(tmp_path, ",".join(PEERS), "--peers-python", str(peers_py),
                         "--metric-calls", "40", "--num-threads", "2", url=srv.url)
        served = srv.request_count
    assert rc == 0, [r.get("error") for r in lines]
    assert [r["framework"] for r in lines] == list(PEERS)
    # every call the runners counted reached the server, and nothing else did
    assert sum(r["llm_calls"] for r in lines) == served
    for r in lines:
        assert r["simulated"] and not r.get("error"), r.get("error")
        assert r["test_before"] == 0.0 and r["test_after"] == 1.0, r["framework"]
        assert r["final_instruction"] == smoke.IMPROVED
        assert 0 < r["metric_calls"] and r["eval_metric_calls"] == 22  # test before + after
        assert r["usd"] > 0 and r["tokens"] > 0
        assert r["peer_versions"]["python"]
    gepa, mipro, tgrad = lines
    assert gepa["metric_calls"] == gepa["gepa"]["total_metric_calls"] <= 40 + 9
    assert mipro["metric_calls"] <= 40 and mipro["settings"]["mipro"]["num_trials"] >= 1
    assert tgrad["metric_calls"] <= 40 and tgrad["steps_done"] == 2
