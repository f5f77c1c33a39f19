"""The SIMULATED quality benchmark (benchmarks/quality/) must reward information flow:
its reflection stand-in infers a rule only from evidence present in a request, and a run
is reproducible per seed. It says nothing about how good tracegrad is on a real model."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

from quality import run as quality_run  # noqa: E402
from quality.models import Noise, ReflectionModel, TaskModel  # noqa: E402
from quality.worlds import WORLDS  # noqa: E402

from tracegrad.llm.base import Request  # noqa: E402

SURE = Noise(slip=0.0, direct=1.0, indirect=1.0, critique=1.0, prior=0.0, harmful=0.0,
             irrelevant=0.0, drop=0.0, broken=0.0)


def _failing(world, rule_name):
    """An example the rule concerns, and the wrong reply the task model gives without it."""
    rule = next(r for r in world.rules if r.name == rule_name)
    ex = next(e for e in world.examples if rule.applies(e)
              and world.output(e, frozenset({rule_name})) != world.expected(e))
    return ex, world.output(ex, frozenset({rule_name}))


@pytest.mark.parametrize("world_name", sorted(WORLDS))
def test_a_rule_is_inferred_from_evidence_and_not_without_it(world_name: str) -> None:
    world = WORLDS[world_name](seed=0)
    model = ReflectionModel(world, 0, SURE)
    for rule in world.rules[1:]:
        ex, wrong = _failing(world, rule.name)
        inp, expected = ex[world.field], world.expected(ex)
        full = f"Input:\n{inp}\nOutput:\n{wrong}\nExpected: {expected}"
        assert rule.name in model.infer(full, "t")
        # remove the failing example's input, or its output: nothing to infer from
        assert rule.name not in model.infer(f"Output:\n{wrong}\nExpected: {expected}", "t")
        assert rule.name not in model.infer(f"Input:\n{inp}\nExpected: {expected}", "t")
        assert model.infer("The answer is wrong; try harder.", "t") == []


def test_indirect_evidence_is_less_likely_to_be_understood() -> None:
    world = WORLDS["object_counting"](seed=0)
    model = ReflectionModel(world, 0, Noise())
    ex, wrong = _failing(world, "category")
    inp = ex[world.field]
    direct = model.evidence(f"{inp}\n{wrong}\nexpected {world.expected(ex)}")
    indirect = model.evidence(f"{inp}\n{wrong}")
    assert direct["category"] > indirect["category"] > 0


def test_the_task_model_follows_rules_stated_in_other_words() -> None:
    world = WORLDS["object_counting"](seed=0)
    task = TaskModel(world, 0, SURE)
    ex = next(e for e in world.examples if all(r.applies(e) for r in world.rules))

    def ask(prompt: str) -> str:
        return task(Request(messages=[{"role": "user", "content": f"{prompt}\n{ex['question']}"}]))

    assert ask("Answer.") != world.expected(ex)
    for a, b, c in zip(*(r.wordings for r in world.rules), strict=False):
        assert ask(f"{a}\n{b}\n{c}") == world.expected(ex)


def test_quick_run_is_reproducible_and_evidence_removal_hurts(tmp_path: Path) -> None:
    kw = {"steps": 3, "batch": 4, "sizes": (20, 20, 20)}
    a = quality_run.run_one("support_routing", "tgd", 1, noise=Noise(), **kw)
    b = quality_run.run_one("support_routing", "tgd", 1, noise=Noise(), **kw)
    a.pop("seconds"), b.pop("seconds")
    # node names carry process-wide counters, so token counts (and dollars) differ by a hair
    assert a.pop("usd") == pytest.approx(b.pop("usd"), rel=0.01)
    assert a == b
    blind = replace(Noise(), direct=0.0, indirect=0.0, critique=0.0)
    c = quality_run.run_one("support_routing", "tgd", 1, noise=blind, **kw)
    assert c["test"] < a["test"]


def test_the_quick_command_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert quality_run.main(["--quick", "--seeds", "1", "--out", str(out)]) == 0
    import json

    data = json.loads(out.read_text())
    assert data["simulated"] is True
    assert {r["world"] for r in data["summary"]} == set(WORLDS)
    assert all(r["seeds"] == 1 for r in data["summary"])


def test_pipeline_rules_act_only_in_their_own_prompt() -> None:
    from quality.worlds import ANSWER_START, EXTRACT_START

    world = WORLDS["counting_pipeline"](seed=0)
    task = TaskModel(world, 0, SURE)
    ex = next(e for e in world.examples if all(r.applies(e) for r in world.rules))
    fmt, mult, cat = (r.wordings[0] for r in world.rules)

    def run(extract: str, answer: str) -> str:
        listing = task(Request(messages=[{"role": "system", "content": extract},
                                         {"role": "user", "content": ex["question"]}]))
        msg = f"Objects:\n{listing}\n\nQuestion: {ex['question']}"
        return task(Request(messages=[{"role": "system", "content": answer},
                                      {"role": "user", "content": msg}]))

    assert run(f"{EXTRACT_START} {mult} {cat}", f"{ANSWER_START} {fmt}") == world.expected(ex)
    # the extraction rules stated in the answer prompt do nothing
    assert run(EXTRACT_START, f"{ANSWER_START} {fmt} {mult} {cat}") != world.expected(ex)
