"""Few-shot demos bootstrapped from correct training examples, gated like any proposal."""

from __future__ import annotations

import contextlib
import json
import re

import pytest

import tracegrad as tg
from tracegrad.testing import MockLLM
from tracegrad.train import optimize


def _rows(n: int, offset: int = 0) -> list[dict]:
    out = []
    for i in range(offset, offset + n):
        out.append({"question": f"easy {i}", "answer": f"A{i}"})
        out.append({"question": f"hard {i}", "answer": f"A{i}"})
    return out


def world(request):
    """Answers 'easy' questions right; 'hard' ones only with a demo showing the format."""
    if request.purpose != "forward":
        return "no usable reply"  # the optimizer's rewrites never help here
    q = request.messages[-1]["content"]
    n = re.search(r"\d+", q).group(0)
    shown = any(m["role"] == "assistant" for m in request.messages[:-1])
    return f"A{n}" if q.startswith("easy") or shown else f"the answer is {n}"


class Program(tg.Module):
    def __init__(self, llm, demos):
        self.demos = demos
        self.call = tg.LLMCall(llm, system="Answer.", demos=demos)

    def forward(self, question):
        return self.call(question)


def _write(tmp_path):
    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in _rows(6)))
    val.write_text("".join(json.dumps(r) + "\n" for r in _rows(5, offset=20)))
    return train, val


def test_demos_from_correct_examples_are_proposed_gated_and_kept(tmp_path):
    llm = MockLLM(world)
    demos = tg.Demos(max_demos=2)
    train, val = _write(tmp_path)
    res = optimize(Program(llm, demos), train, val, metric="exact_match", optimizer="tgd",
                   optimizer_engine=llm, run_dir=False, progress=False, steps=3, batch_size=4,
                   seed=0)
    assert res.baseline_score == pytest.approx(0.5)
    assert res.best_score == pytest.approx(1.0)
    assert 1 <= len(demos.value) <= 2
    # every demo is a step this program got right on a training example
    train_q = {r["question"] for r in _rows(6)}
    assert all(d["input"] in train_q and d["input"].startswith("easy") for d in demos.value)
    events = [e for h in res.history for e in h.get("events", [])]
    assert any(e.get("event") == "demos_bootstrapped" for e in events)


def test_a_demos_proposal_that_does_not_help_is_reverted(tmp_path):
    def no_help(request):
        if request.purpose != "forward":
            return "no usable reply"
        q = request.messages[-1]["content"]
        n = re.search(r"\d+", q).group(0)
        return f"A{n}" if q.startswith("easy") else "?"  # demos change nothing

    llm = MockLLM(no_help)
    demos = tg.Demos(max_demos=2)
    train, val = _write(tmp_path)
    res = optimize(Program(llm, demos), train, val, metric="exact_match", optimizer="tgd",
                   optimizer_engine=llm, run_dir=False, progress=False, steps=2, batch_size=4,
                   gate="improve")
    assert demos.value == []
    assert any(h.get("result") == "reverted" for h in res.history)


def test_demos_are_checked_and_render_as_turns_and_text():
    d = tg.Demos([{"input": "2+2", "output": "4"}], max_demos=1)
    llm = MockLLM("ok")
    tg.LLMCall(llm, system="Add.", demos=d)("3+3")
    roles = [m["role"] for m in llm.requests[-1].messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert tg.format("{{ d }}", d=d).value == "Example 1\nInput: 2+2\nOutput: 4"
    from tracegrad.optim import constraints
    _, problems = constraints.check(d, '[{"input": "a", "output": "b"}, {"input": "c", "output": "d"}]')
    assert problems and "at most 1" in problems[0]
    assert constraints.check(d, '[{"input": "a", "output": "b"}]') == ([{"input": "a", "output": "b"}], [])
    with pytest.raises(ValueError, match="max_demos"):
        tg.Demos(max_demos=0)
    with pytest.raises(ValueError, match="'input' and 'output'"):
        tg.Demos([{"q": "x"}])


def test_tgd_may_replace_demos_and_a_list_over_the_limit_is_rejected():
    d = tg.Demos([{"input": "2+2", "output": "5"}], max_demos=1, name="demos")
    good = '<new_value>[{"input": "2+2", "output": "4"}]</new_value>'
    too_many = ('<new_value>[{"input": "a", "output": "b"}, {"input": "c", "output": "d"}]'
                '</new_value>')
    for reply, expected in ((too_many, [{"input": "2+2", "output": "5"}]),
                            (good, [{"input": "2+2", "output": "4"}])):
        llm = MockLLM(lambda r, reply=reply: "4" if r.purpose == "forward" else reply)
        opt = tg.TGD([d], llm)
        out = tg.LLMCall(llm, system="Add.", demos=d)("3+3")
        out.backward("demo 1 shows a wrong sum")
        with pytest.warns(RuntimeWarning) if reply is too_many else contextlib.nullcontext():
            opt.step()
        assert d.value == expected

