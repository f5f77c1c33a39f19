"""The demo's simulated world: its answers depend only on the prompt's instructions, and
the demo's improvement disappears when the optimizer's rewrites are taken away."""

from __future__ import annotations

from pathlib import Path

import pytest

import tracegrad.demo as demo
from tracegrad.llm.base import Request

Q = "I have a violin, two pianos, a cat, and a flute. How many musical instruments do I have?"


def ask(prompt: str) -> str:
    world = demo.CountingWorld()
    return world.reply(Request(messages=[{"role": "user", "content": f"{prompt}\n\n{Q}"}]))


def test_task_model_has_three_habits_each_cured_by_an_instruction() -> None:
    assert demo.true_count(Q) == 4
    assert ask("Answer the question.") == "Let me count them. I count 4 musical instruments."
    fmt = demo.INSTRUCTIONS[demo.FORMAT]
    assert ask(f"Answer the question. {fmt}") == "4"  # 3 names + the cat, counted once each
    assert ask(f"{fmt} {demo.INSTRUCTIONS[demo.MULTIPLES]}") == "5"  # two pianos, plus the cat
    assert ask(f"{fmt} {demo.INSTRUCTIONS[demo.CATEGORY]}") == "3"  # pianos counted once
    all_three = " ".join(demo.INSTRUCTIONS.values())
    assert ask(all_three) == "4"


def test_generated_questions_are_answerable() -> None:
    rows = demo.make_examples(30, seed=5)
    assert len({r["question"] for r in rows}) == 30
    for r in rows:
        assert demo.true_count(r["question"]) == int(r["answer"])


def test_without_the_optimizers_rewrites_the_score_does_not_move(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo.CountingWorld, "_improve",
                        staticmethod(lambda template, counts: template))
    res = demo.run_demo(tmp_path / "run", steps=3)
    assert res["best_score"] == res["baseline_score"] == 0.0
    assert res["after"] == res["before"]


def test_with_the_rewrites_the_score_rises_step_by_step(tmp_path: Path) -> None:
    res = demo.run_demo(tmp_path / "run", steps=4)
    scores = res["val_scores"]
    assert scores[0] == 0.0 and scores[-1] == 1.0
    assert all(b >= a for a, b in zip(scores, scores[1:], strict=False))
    assert len(set(scores)) >= 3  # it improves gradually, one instruction per step
    for instruction in demo.INSTRUCTIONS.values():
        assert instruction in res["after"]
