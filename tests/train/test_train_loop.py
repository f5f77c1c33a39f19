from __future__ import annotations

import json
import random
import re

import pytest

import tracegrad as tg
from tracegrad.optim import OPRO, TGD, Optimizer
from tracegrad.testing import MockLLM
from tracegrad.train import DatasetError, Trainer, evaluate, optimize
from tracegrad.train.pool import Pool, candidate

from .sim_task import (
    BAD,
    INITIAL,
    QA,
    RULES,
    forward_llm,
    optimizer_llm,
    rows,
    write_data,
)


def run(tmp_path, **kw):
    train, val = write_data(tmp_path)
    fw, op = kw.pop("fw", None) or forward_llm(), kw.pop("op", None) or optimizer_llm()
    model = kw.pop("model", None) or QA(fw)
    args = dict(
        metric="exact_match",
        optimizer_engine=op,
        steps=8,
        batch_size=4,
        seed=3,
        run_dir=tmp_path / "run",
        progress=False,
        concurrency=4,
    )
    args.update(kw)
    res = optimize(model, train, kw.pop("val", val), **args)
    return res, model, fw, op


def test_optimize_learns_the_rules_and_reverts_the_bad_proposal(tmp_path):
    res, model, fw, op = run(tmp_path)
    # baseline: only the "plain" questions are right
    assert res.baseline_score == pytest.approx(0.25)
    assert res.best_score == 1.0 and res.final_score == 1.0
    assert res.stopped_reason == "perfect" and res.steps_done <= 8
    final = model.system.value
    assert all(rule in final for _, rule in RULES.values()) and BAD not in final
    assert res.best_state == {"system": final}

    hist = res.history
    results = [r["result"] for r in hist]
    assert results.count("accepted") == 3
    first_bad = next(r for r in hist if BAD in json.dumps(r["proposed"]))
    assert first_bad["result"] == "reverted" and first_bad["reverted"]
    assert first_bad["val_score"] == 0.0 and "dropped" in first_bad["reason"]
    assert BAD not in first_bad["values"]["system"]  # the value after the step is the parent's
    accepted_vals = [r["val_score"] for r in hist if r["accepted"]]
    assert accepted_vals == sorted(accepted_vals) and accepted_vals[-1] == 1.0
    # the file history is the returned history
    lines = (tmp_path / "run" / "history.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [r["step"] for r in hist]
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best["state"] == {"system": final} and best["score"] == 1.0

    # backward ran once per step on the aggregate: the optimizer got one request per step
    assert op.calls_for("optimizer") == sum(r["calls"]["optimizer"] for r in hist)
    assert op.calls_for("backward") == sum(r["calls"]["backward"] for r in hist) > 0
    # TGD saw the reverted attempt with its score, which is how it avoided it afterwards
    later = [t for t in op.texts("optimizer")][1]
    assert BAD in later.split("## Earlier values")[1]
    assert "reverted" in later


def test_validation_cache_never_reevaluates_a_candidate(tmp_path):
    res, model, fw, op = run(tmp_path)
    val_questions = [r["question"] for r in rows(2, offset=10)]
    seen: dict[tuple[str, str], int] = {}
    for req in fw.requests:
        q = req.messages[-1]["content"]
        if q in val_questions:
            key = (req.messages[0]["content"], q)
            seen[key] = seen.get(key, 0) + 1
    assert seen and max(seen.values()) == 1
    # baseline + one full validation per proposal
    proposals = sum(1 for r in res.history if r["candidate"])
    assert len(seen) == len(val_questions) * (1 + proposals)


def test_forward_runs_concurrently(tmp_path):
    fw = forward_llm(latency=0.02)
    run(tmp_path, fw=fw, steps=1, concurrency=4)
    assert fw.max_in_flight > 1


def test_gate_improve_rejects_equal_scores(tmp_path):
    class Noop(Optimizer):
        """Proposes a harmless rewording: scores the same as its parent."""

        def step(self):
            result = self._new_result()
            self._apply(result, {n: p.value + " Be kind." for n, p in self.names.items()}, {})
            return result

    train, val = write_data(tmp_path)
    model = QA(forward_llm())
    opt = Noop(model.parameters())
    res = optimize(
        model,
        train,
        val,
        metric="exact_match",
        optimizer=opt,
        steps=2,
        batch_size=4,
        gate="improve",
        run_dir=False,
        progress=False,
        optimizer_engine=optimizer_llm(),
    )
    assert [r["result"] for r in res.history] == ["reverted", "reverted"]
    assert "not an improvement" in res.history[0]["reason"]
    assert model.system.value == INITIAL and res.run_dir is None
    res2 = optimize(
        model,
        train,
        val,
        metric="exact_match",
        optimizer=Noop(model.parameters()),
        steps=1,
        batch_size=4,
        gate="non-decrease",
        run_dir=False,
        progress=False,
        optimizer_engine=optimizer_llm(),
    )
    assert res2.history[0]["result"] == "accepted"


def test_minibatch_gate_skips_full_validation_on_a_drop(tmp_path):
    res, model, fw, op = run(tmp_path, gate="minibatch", steps=1, batch_size=8)
    rec = res.history[0]
    assert rec["train_score"] > 0  # the batch holds questions the parent gets right
    assert rec["result"] == "reverted" and "pre-check" in rec["reason"]
    assert rec["val_score"] is None and rec["candidate_train_score"] == 0.0
    val_questions = {r["question"] for r in rows(2, offset=10)}
    bad_on_val = [
        r
        for r in fw.requests
        if BAD in r.messages[0]["content"] and r.messages[-1]["content"] in val_questions
    ]
    assert bad_on_val == []  # the bad candidate never paid for full validation


def test_without_val_gates_on_the_minibatch(tmp_path):
    train, _ = write_data(tmp_path)
    model = QA(forward_llm())
    res = optimize(
        model,
        train,
        None,
        metric="exact_match",
        optimizer_engine=optimizer_llm(),
        steps=6,
        batch_size=12,
        run_dir=tmp_path / "r",
        progress=False,
    )
    assert res.history[0]["result"] == "reverted"
    assert res.history[0]["candidate_train_score"] < res.history[0]["train_score"]
    assert res.baseline_score == pytest.approx(0.25)
    assert res.best_score == 1.0 and all(rule in model.system.value for _, rule in RULES.values())


def test_beam_keeps_the_best_of_several_proposals(tmp_path):
    class Beam(Optimizer):
        """Proposes a different value for each sample_id (re-sampling the same step)."""

        def step(self, sample_id=None):
            result = self._new_result()
            choice = {None: BAD, "3:1:1": RULES["arith"][1]}.get(sample_id, "Be brief.")
            self._apply(result, {n: f"{p.value} {choice}" for n, p in self.names.items()}, {})
            return result

    train, val = write_data(tmp_path)
    model = QA(forward_llm())
    res = optimize(
        model,
        train,
        val,
        metric="exact_match",
        optimizer=Beam(model.parameters()),
        beam=3,
        steps=1,
        batch_size=4,
        seed=3,
        run_dir=tmp_path / "r",
        progress=False,
    )
    rec = res.history[0]
    assert [b["candidate"] for b in rec["beam"]] == ["c1.0", "c1.1", "c1.2"]
    assert rec["candidate"] == "c1.1" and rec["accepted"]
    assert model.system.value == f"{INITIAL} {RULES['arith'][1]}"


def test_pareto_selects_parents_from_the_front(tmp_path):
    pool = Pool(
        5,
        [
            candidate("c1", 1, "c0", {"system": "a"}, 0.5, {"x": 1.0, "y": 0.0, "z": 0.5}),
            candidate("c2", 2, "c0", {"system": "b"}, 0.5, {"x": 0.0, "y": 1.0, "z": 0.5}),
            candidate("c3", 3, "c0", {"system": "c"}, 0.6, {"x": 0.5, "y": 0.5, "z": 0.8}),
            # ties c1 on x, but c1 is as good everywhere and better on z: dominated
            candidate("c4", 4, "c0", {"system": "d"}, 0.4, {"x": 1.0, "y": 0.0, "z": 0.2}),
            # the best on no example at all, despite a good average
            candidate("c5", 5, "c0", {"system": "e"}, 0.6, {"x": 0.9, "y": 0.9, "z": 0.0}),
        ],
        current_id="c3",
    )

    def parent(step):  # the trainer's seeding: (seed, "parent", step)
        return pool.parent(True, random.Random(f"1:parent:{step}"))

    picks = [parent(step)["id"] for step in range(1, 200)]
    assert set(picks) == {"c1", "c2", "c3"}
    assert picks == [parent(step)["id"] for step in range(1, 200)]  # seeded

    res, model, fw, op = run(tmp_path, pareto=True, pool_size=4)
    assert res.best_score == 1.0
    accepted = {r["candidate"] for r in res.history if r["accepted"]}
    assert {r["parent"] for r in res.history} <= {"c0"} | accepted


def test_opro_needs_no_backward(tmp_path):
    def opro_reply(request):
        text = request.messages[-1]["content"].split("## Your reply")[0]
        name, best = re.findall(r"<value name=\"([^\"]+)\">(.*?)</value>", text, re.S)[-1]
        for _, rule in RULES.values():
            if rule not in best:
                return f'<value name="{name}">{best} {rule}</value>'
        return f'<value name="{name}">{best}</value>'

    op = MockLLM(opro_reply)
    res, model, fw, _ = run(tmp_path, op=op, optimizer="opro", steps=5)
    assert isinstance(res, object) and op.calls_for("backward") == 0
    assert res.best_score == 1.0 and res.history[0]["calls"]["backward"] == 0
    assert (
        json.loads((tmp_path / "run" / "config.json").read_text())["optimizer"]["class"] == "OPRO"
    )
    assert isinstance(
        Trainer(
            QA(fw),
            rows(1),
            metric="exact_match",
            optimizer="opro",
            optimizer_engine=op,
            run_dir=False,
        ).optimizer,
        OPRO,
    )


def test_execution_errors_become_feedback(tmp_path):
    @tg.op
    def parse(text: str) -> str:
        """Keep a bare answer; refuse sentences."""
        if text.startswith("The answer is") or "I explained" in text:
            raise ValueError(f"got {text!r}, need the bare answer")
        return text

    class Piped(QA):
        def forward(self, question):
            return parse(super().forward(question))

    op = optimizer_llm()
    res, model, fw, _ = run(tmp_path, model=Piped(forward_llm()), op=op)
    # the arithmetic failures were crashes in `parse`; their error nodes were part of the
    # backward pass, so the optimizer still learnt the rule from them
    crash_feedback = [f for r in res.history for f in r["feedback"] if "raised ValueError" in f]
    assert crash_feedback
    asked = [t for t in op.texts("backward") if "The function parse raised ValueError" in t]
    assert asked and any("raised ValueError" in t for t in op.texts("optimizer"))
    assert res.best_score == 1.0 and RULES["arith"][1] in model.system.value


def test_all_examples_crashing_is_an_error_not_a_score(tmp_path):
    def broken(question):
        raise TypeError("bad pipeline")

    train, val = write_data(tmp_path)
    p = tg.Parameter("x")
    with pytest.raises(RuntimeError, match="failed on every example.*bad pipeline"):
        optimize(
            broken,
            train,
            val,
            metric="exact_match",
            parameters=[p],
            optimizer=TGD([p], engine=optimizer_llm()),
            run_dir=False,
            progress=False,
        )


def test_malformed_dataset_is_reported_before_any_call(tmp_path):
    train, val = write_data(tmp_path)
    lines = train.read_text().splitlines()
    lines[4] = '{"question": "What is 1 + 1?"'  # line 5: broken JSON
    train.write_text("\n".join(lines) + "\n")
    fw, op = forward_llm(), optimizer_llm()
    with pytest.raises(DatasetError) as ei:
        optimize(
            QA(fw),
            train,
            val,
            metric="exact_match",
            optimizer_engine=op,
            run_dir=tmp_path / "run",
            progress=False,
        )
    assert ei.value.line == 5 and "train.jsonl:5" in str(ei.value)
    assert fw.calls == 0 and op.calls == 0
    assert not (tmp_path / "run").exists()


def test_evaluate_scores_without_a_graph(tmp_path):
    train, val = write_data(tmp_path)
    fw = forward_llm()
    result = evaluate(QA(fw), val, "exact_match")
    assert result.score == pytest.approx(0.25) and len(result.failures()) == 6
    assert all(o.output_var is None for o in result.outcomes)


def test_progress_lines_on_stderr(tmp_path, capsys):
    run(tmp_path, steps=2, progress=True)
    err = capsys.readouterr().err
    assert "step 1/2" in err and "step 2/2" in err and "reverted" in err


def test_argument_validation(tmp_path):
    train, val = write_data(tmp_path)
    with pytest.raises(ValueError, match="gate must be one of"):
        Trainer(QA(forward_llm()), train, metric="exact_match", gate="sometimes")
    with pytest.raises(ValueError, match="unknown optimizer"):
        Trainer(
            QA(forward_llm()),
            train,
            metric="exact_match",
            optimizer="adam",
            optimizer_engine=optimizer_llm(),
        )
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "history.jsonl").write_text("")
    with pytest.raises(FileExistsError, match="already holds a run"):
        optimize(
            QA(forward_llm()),
            train,
            val,
            metric="exact_match",
            run_dir=tmp_path / "run",
            optimizer_engine=optimizer_llm(),
            progress=False,
        )


class Noop(Optimizer):
    """Proposes nothing: a step costs no LLM call, which keeps sampling tests fast."""

    def step(self):
        result = self._new_result()
        self._apply(result, {}, {})
        return result


def test_epochs_cover_every_example_once_per_epoch(tmp_path):
    train, val = write_data(tmp_path)
    model = QA(forward_llm())
    res = optimize(
        model,
        train,
        None,
        metric="exact_match",
        optimizer=Noop(model.parameters()),
        epochs=2,
        batch_size=5,
        run_dir=False,
        progress=False,
    )
    assert res.steps_done == 6  # ceil(12 / 5) = 3 steps per epoch
    ids = [i for r in res.history for i in r["batch"]]
    first, second = ids[:15], ids[15:]
    assert set(first) == set(second) == {f"train.jsonl:{n}" for n in range(1, 13)}
    assert first != second  # reshuffled per epoch
    assert all(r["result"] in ("unchanged", "skipped") for r in res.history)


def test_gate_none_follows_the_trajectory_but_ends_at_the_best(tmp_path):
    res, model, fw, op = run(tmp_path, gate="none", steps=1)
    rec = res.history[0]
    assert rec["accepted"] and rec["val_score"] == 0.0 and "(no gate)" in rec["reason"]
    assert BAD in rec["values"]["system"]
    assert res.final_score == 0.0 and res.best_score == pytest.approx(0.25)
    assert model.system.value == INITIAL  # the parameters end at the best candidate


def test_validation_examples_never_reach_the_optimizer(tmp_path):
    res, model, fw, op = run(tmp_path)
    assert res.best_score == 1.0 and op.calls > 0
    held_out = [r["question"] for r in rows(2, offset=10)] + [
        r["answer"] for r in rows(2, offset=10) if "-" in r["answer"]
    ]
    for text in op.texts():
        assert not any(q in text for q in held_out)
    # ... while the score and the count of failures do
    assert any("validation examples were not fully correct" in t for t in op.texts("optimizer"))
