"""Fault injection through the Python API: ``tracegrad.train.optimize`` with real
OpenAIEngines (``tracegrad.llm.LLM(base_url=..., api_key=...)``) on a misbehaving
FakeOpenAIServer. Besides the run-directory invariants, these check the promise of
DESIGN principle 6: a bad reply is detected and recorded, never a silent no-op."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tracegrad.llm import LLM, LLMError, RetryableError
from tracegrad.llm.base import Request
from tracegrad.promptfile import PromptFile
from tracegrad.train import optimize

from .reliability_harness import (
    MODEL,
    SCENARIOS,
    SECRET,
    check_run_dir,
    copy_counting,
    run_scenario_api,
    world_server,
)


def scenario(name: str):
    return next(s for s in SCENARIOS if s.name == name)


def history(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "history.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("optimizer", ["tgd", "trace", "opro"])
@pytest.mark.parametrize("name", ["missing-every-tag", "json-wrong-keys"])
def test_unusable_optimizer_replies_are_recorded_never_silent(tmp_path: Path, name: str,
                                                              optimizer: str) -> None:
    row = run_scenario_api(scenario(name), optimizer, tmp_path, steps=2)
    assert row.outcome == "completed" and not row.damage, row
    run_dir = tmp_path / "run"
    initial = json.loads((run_dir / "config.json").read_text())["parameters"]
    recs = history(run_dir)
    assert [r["step"] for r in recs] == [1, 2]
    for r in recs:
        # the old value is kept, and the step says its proposal was thrown away (issue 14
        # s4: it used to read "unchanged: the optimizer proposed no change") ...
        assert r["result"] == "rejected", r["reason"]
        assert "proposed no change" not in r["reason"]
        assert all(r["values"][k] == v["initial"] for k, v in initial.items())
        # ... and the reason is on record, naming what was wrong with the reply
        events = [e.get("event") for e in r["events"]]
        assert set(events) & {"missing_tags", "invalid_reply", "repair", "unknown_key"}, events
        if optimizer == "tgd":  # backward replies were unusable too, and said so
            assert "backward_fallback" in events
    assert row.requests > 0


def test_retries_ride_out_a_storm_but_not_an_outage(tmp_path: Path) -> None:
    """The retry budget is per call: 4 faults in a row are survived, 5 are reported with the
    number of attempts and the last status, as a typed, retryable error."""
    with world_server() as (server, _):
        engine = LLM(MODEL, base_url=server.url, api_key=SECRET, cache=False,
                     backoff_base=0.001, max_retries=4)
        server.inject("503", times=4)
        assert engine.complete(Request(messages=[{"role": "user", "content": "x"}])).text
        server.inject("429", times=5, retry_after=None)
        with pytest.raises(RetryableError) as info:
            engine.complete(Request(messages=[{"role": "user", "content": "y"}]))
        assert "gave up after 5 attempts" in str(info.value) and "429" in str(info.value)
        assert SECRET not in str(info.value)


@pytest.mark.parametrize("outage_after", [6, 14, 22, 30])
def test_a_run_stopped_by_an_outage_resumes_to_the_same_result(tmp_path: Path,
                                                              outage_after: int) -> None:
    """Stop, resume: the finished run equals one that never failed (same steps, same best).
    The outage starts at different moments: in the baseline, in a step's forward pass, in
    backward, in a candidate's validation -- no moment may leave a trace in the result."""
    def run(where: Path, sc, resume: bool = False):
        task = copy_counting(where / "task") if not resume else \
            {k: where / "task" / f"object_counting.{s}" for k, s in
             (("prompt", "prompt"), ("train", "train.jsonl"), ("val", "val.jsonl"))}
        pf = PromptFile.load(task["prompt"])
        engine = LLM(MODEL, base_url=server_url[0], api_key=SECRET, cache=False,
                     backoff_base=0.001, max_concurrency=4)
        return optimize(pf.to_module(engine), pf.load_dataset(task["train"]),
                        pf.load_dataset(task["val"]), metric=pf.metric_fn(), steps=3,
                        batch_size=3, engine=engine, optimizer_engine=engine,
                        run_dir=where / "run", resume=(where / "run") if resume else None,
                        concurrency=4, progress=False)

    server_url = [""]
    with world_server() as (server, _):
        server_url[0] = server.url
        reference = run(tmp_path / "ref", None)
    outage = replace(scenario("outage-then-resume"), outage_after=outage_after)
    with world_server(outage) as (server, world):
        server_url[0] = server.url
        with pytest.raises((LLMError, RuntimeError)):
            run(tmp_path / "cut", None)
        assert check_run_dir(tmp_path / "cut" / "run") == []
        world.repair()
        resumed = run(tmp_path / "cut", None, resume=True)
    assert check_run_dir(tmp_path / "cut" / "run", finished=True, steps=3) == []
    def story(r):
        return [(h["step"], h["result"], h["reason"]) for h in r.history]

    assert resumed.steps_done == reference.steps_done, (story(reference), story(resumed))
    assert resumed.best_state == reference.best_state, (story(reference), story(resumed))
    assert resumed.best_score == reference.best_score
    assert [r["step"] for r in resumed.history] == [r["step"] for r in reference.history]
