"""Optimizer names, and each optimizer's declared calls per step against the real count.

The declarations feed cost estimates; these tests are what keeps them from drifting:
every case runs one training step through ``tg.optimize`` with mock engines and compares
the calls the optimizer engine received, by kind, with ``calls_per_step``.
"""

from __future__ import annotations

import itertools
import json
import re

import pytest

import tracegrad as tg
from tracegrad import prompts
from tracegrad.llm.base import Request
from tracegrad.optim import OPRO, TGD, TraceOptimizer
from tracegrad.optim.registry import (
    build_optimizer,
    calls_per_step,
    optimizer_names,
    resolve,
)
from tracegrad.testing import MockLLM

# -- names ------------------------------------------------------------------------------


def test_every_name_builds_its_class_with_its_options():
    p = tg.Parameter("Answer.", name="p")
    expected = {"tgd": TGD, "textgrad": TGD, "textual": TGD, "tgd-batched": TGD,
                "trace": TraceOptimizer, "optoprime": TraceOptimizer, "opro": OPRO,
                "reflect": tg.Reflect, "reflect-lean": tg.Reflect}
    assert optimizer_names() == sorted(expected)
    assert optimizer_names(aliases=False) == ["tgd", "tgd-batched", "trace", "opro", "reflect",
                                                "reflect-lean"]
    engine = MockLLM()
    for name, cls in expected.items():
        opt = build_optimizer(f" {name.upper()} ", [p], engine=engine, max_concurrency=3)
        assert type(opt) is cls and opt.max_concurrency == 3 and opt._engine is engine
    assert build_optimizer("tgd-batched", [p]).batch_feedback is True
    assert build_optimizer("tgd", [p]).batch_feedback is False
    assert build_optimizer("reflect", [p]).critique is True
    assert build_optimizer("reflect-lean", [p]).critique is False
    assert resolve("optoprime")[0] is TraceOptimizer


def test_a_class_or_an_instance_is_accepted_and_an_unknown_name_is_refused():
    p = tg.Parameter("Answer.", name="p")
    assert type(build_optimizer(OPRO, [p], history=4)) is OPRO
    opt = TGD([p])
    assert build_optimizer(opt, [p]) is opt
    with pytest.raises(ValueError, match=r"unknown optimizer 'sgd'; use one of opro, .*trace "
                                         r"or an Optimizer instance"):
        build_optimizer("sgd", [p])


def test_inputs_outside_a_step_are_refused_and_a_step_without_failures_costs_nothing():
    with pytest.raises(ValueError, match="n_failures"):
        calls_per_step("tgd", 1, 5, 4)
    assert calls_per_step("tgd", 1, 0, 4) == {"backward": 0, "summary": 0, "optimizer": 0,
                                              "repair": 0}


# -- declarations against the count -------------------------------------------------------

FORWARD_REPLY = "7"
LONG = "x" * 7000
SUMMARY_PROMPT = prompts.load("feedback_summary").split("$limit")[0]


def feedback_keys(request: Request) -> list[str]:
    """The input keys a backward request asks feedback for."""
    tail = request.messages[-1]["content"].split("## Inputs to give feedback on")[-1]
    return re.findall(r"^- `([^`]+)`", tail, re.M)


def kind_of(request: Request) -> str:
    """Which of the declared kinds a request to the optimizer engine is."""
    if any(m["role"] == "assistant" for m in request.messages):
        return "repair"
    if request.purpose == "backward":
        return "backward"
    if request.messages[0]["content"].startswith(SUMMARY_PROMPT):
        return "summary"
    return "optimizer"


def counted(engine: MockLLM) -> dict[str, int]:
    out = dict.fromkeys(("backward", "summary", "optimizer", "repair"), 0)
    for r in engine.requests:
        out[kind_of(r)] += 1
    return out


class Reflector:
    """Answers every optimizer-engine request well-formed, or badly on purpose."""

    def __init__(self, *, feedback: str = "Say the unit.", unique: bool = False,
                 broken: bool = False) -> None:
        self.feedback = feedback
        self.unique = unique  # a different feedback text per backward call
        self.broken = broken
        self.trace_replies = 0
        self.numbers = itertools.count()

    def __call__(self, request: Request) -> str:
        user = request.messages[-1]["content"]
        if request.purpose == "backward":
            text = f"{self.feedback} #{next(self.numbers)}" if self.unique else self.feedback
            return "not json" if self.broken else json.dumps(
                {k: text for k in feedback_keys(request)})
        if kind_of(request) == "summary":
            return "A summary."
        if "## Parameters you may change" in request.messages[1]["content"]:
            return self._trace()
        if '<value name="' in request.messages[1]["content"]:
            return "no blocks" if self.broken else "".join(
                f'<value name="{n}">Improved.</value>'
                for n in re.findall(r"^### (\S+)$", user, re.M))
        return "no tags" if self.broken else "<new_value>Improved.</new_value>"

    def _trace(self) -> str:
        self.trace_replies += 1
        if not self.broken:
            return json.dumps({"reasoning": "r", "values": {}})
        if self.trace_replies == 1:
            return "not json"  # a JSON repair follows
        return json.dumps({"reasoning": "r", "values": {"system": "BAD"}})  # then a constraint one


def no_bad(value: str) -> bool:
    """Must not say BAD."""
    return "BAD" not in value


class OneCall(tg.Module):
    def __init__(self, llm: MockLLM) -> None:
        self.system = tg.Parameter("Answer.", role="system prompt", name="system",
                                   constraints=[no_bad])
        self.call = tg.LLMCall(llm, system=self.system)

    def forward(self, question: str) -> tg.Variable:
        return self.call(tg.Variable(question, role="question"))


class TwoCalls(tg.Module):
    def __init__(self, llm: MockLLM) -> None:
        self.extract = tg.Parameter("List the objects.", role="extraction prompt", name="extract")
        self.system = tg.Parameter("Answer.", role="answer prompt", name="system")
        self.first = tg.LLMCall(llm, system=self.extract, name="first")
        self.second = tg.LLMCall(llm, system=self.system, name="second")

    def forward(self, question: str) -> tg.Variable:
        return self.second(self.first(tg.Variable(question, role="question")))


def one_step(name: str, *, failures: int, batch: int, program=OneCall, question: str = "q",
             explanation: str = "Wrong.", **reflector) -> MockLLM:
    """Run one training step; return the optimizer engine that served it."""
    rows = [{"question": f"{question} {i}", "answer": "8" if i < failures else FORWARD_REPLY}
            for i in range(batch)]

    def metric(prediction, expected):
        ok = str(prediction).strip() == str(expected)
        return (1.0, "Correct.") if ok else (0.0, explanation)

    engine = MockLLM(Reflector(**reflector))
    tg.optimize(program(MockLLM(default=FORWARD_REPLY)), rows, metric=metric, optimizer=name,
                steps=1, batch_size=batch, optimizer_engine=engine, run_dir=False,
                progress=False, input_fields=["question"], output_field="answer")
    return engine


CASES = [
    # name, failures, batch, declaration details, how to run the step
    ("tgd", 3, 6, {}, {}),
    ("tgd", 4, 4, {"llm_calls": 2}, {"program": TwoCalls}),
    ("tgd", 2, 5, {"feedback_chars": len(LONG)}, {"feedback": LONG}),
    ("tgd", 2, 5, {"feedback_chars": 2000}, {"feedback": "y" * 2000, "unique": True}),
    ("tgd", 4, 5, {"feedback_chars": 2000}, {"feedback": "y" * 2000, "unique": True}),
    ("tgd-batched", 5, 7, {}, {}),
    ("tgd-batched", 5, 5, {"example_chars": 2000 + 4000 + len(FORWARD_REPLY)},
     {"question": "q" * 2500, "explanation": "Wrong. " * 700}),
    ("textgrad", 1, 3, {"llm_calls": 2}, {"program": TwoCalls}),
    ("trace", 3, 6, {}, {}),
    ("trace", 4, 4, {"feedback_chars": len(LONG)}, {"explanation": LONG}),
    ("trace", 12, 12, {"feedback_chars": len(LONG)}, {"explanation": LONG}),
    ("optoprime", 2, 4, {}, {"program": TwoCalls}),
    ("opro", 2, 5, {}, {}),
]


@pytest.mark.parametrize(("name", "failures", "batch", "details", "run"), CASES)
def test_the_declared_calls_are_the_calls_one_step_makes(name, failures, batch, details, run):
    n_params = 2 if run.get("program") is TwoCalls else 1
    engine = one_step(name, failures=failures, batch=batch, **run)
    assert counted(engine) == calls_per_step(name, n_params, failures, batch, **details)


@pytest.mark.parametrize(("name", "run"), [
    ("tgd", {}), ("tgd", {"program": TwoCalls}), ("tgd-batched", {}), ("trace", {}),
    ("opro", {}),
])
def test_the_declared_worst_case_is_the_calls_a_step_with_unusable_replies_makes(name, run):
    n_params = 2 if run.get("program") is TwoCalls else 1
    engine = one_step(name, failures=3, batch=4, broken=True, **run)
    got = counted(engine)
    declared = calls_per_step(name, n_params, 3, 4, worst=True, llm_calls=n_params)
    assert got == declared, engine.texts()
    assert got["repair"] > 0
