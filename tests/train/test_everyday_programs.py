"""Programs written the everyday way: ``async def forward`` and ``@tg.op`` on methods (issue 14 s6).

``tg.optimize`` called ``program(**inputs)`` and scored what came back, so an async
forward scored 0 against "<coroutine object ...>" (with a "never awaited" warning), and
``@tg.op`` returned an object that was no descriptor, so a decorated method never
received ``self``.
"""

from __future__ import annotations

import asyncio
import inspect

import pytest

import tracegrad as tg
from tracegrad.train import evaluate, optimize

from .sim_task import INITIAL, forward_llm, optimizer_llm, write_data


class AsyncQA(tg.Module):
    def __init__(self, llm) -> None:
        self.system = tg.Parameter(INITIAL, role="system prompt of the question answerer")
        self.answer = tg.LLMCall(llm, system=self.system)

    async def forward(self, question: str) -> tg.Variable:
        await asyncio.sleep(0)  # a real await: the coroutine must be driven, not inspected
        return await self.answer.acall(tg.Variable(question, role="question"))


def test_optimize_awaits_an_async_forward(tmp_path):
    train, val = write_data(tmp_path)
    model = AsyncQA(forward_llm())
    res = optimize(model, train, val, metric="exact_match", optimizer_engine=optimizer_llm(),
                   steps=8, batch_size=4, seed=3, run_dir=tmp_path / "run", progress=False,
                   concurrency=4)
    # the same run as the sync QA of test_train_loop: 0.25 at first, then every rule learnt
    assert res.baseline_score == pytest.approx(0.25)
    assert res.best_score == 1.0
    assert "coroutine" not in str(res.history)


def test_evaluate_awaits_an_async_function_even_inside_a_running_loop():
    async def answer(question: str) -> str:
        await asyncio.sleep(0)
        return question.upper()

    data = [{"question": "yes", "answer": "YES"}, {"question": "no", "answer": "NO"}]

    async def main():  # a notebook or an async app calls tg.evaluate from its own loop
        return evaluate(answer, data, "exact", input_fields=["question"], output_field="answer")

    assert evaluate(answer, data, "exact", input_fields=["question"],
                    output_field="answer").score == 1.0
    assert asyncio.run(main()).score == 1.0


class Parser(tg.Module):
    def __init__(self, scale: int) -> None:
        self.scale = scale

    @tg.op
    def parse(self, text: str) -> int:
        """Read the model's number and scale it."""
        return int(text.strip()) * self.scale


def test_op_on_a_method_receives_self_and_traces():
    p = Parser(3)
    v = tg.Variable(" 7 ", role="answer")
    out = p.parse(v)
    assert out.value == 21
    assert out.parents == (v,) and out.op.name == "parse"
    assert "def parse(self, text" in out.op.source
    assert out.op.description == "Read the model's number and scale it."
    assert Parser.parse(p, v).value == 21  # through the class, as for any method
    assert isinstance(Parser.__dict__["parse"], tg.ops.python.TracedFunction)
    assert inspect.signature(p.parse).parameters.keys() == {"text"}


def test_an_error_in_a_method_op_is_feedback(backward_engine):
    prompt = tg.Parameter("Say a number", role="prompt")
    with pytest.raises(tg.ExecutionError) as info:
        Parser(2).parse(tg.concat(prompt, "seven"))
    assert "int(text.strip())" in info.value.variable.value
    info.value.variable.backward()
    assert prompt.grads and "int(text.strip())" in prompt.grads[0].text
    assert backward_engine.calls == 0  # only plain ops on the path


def test_a_trainable_method_op_is_refused_with_the_reason():
    class Bad:
        @tg.op(trainable=True)
        def step(self, x):
            return x

    with pytest.raises(TypeError, match="sandbox"):
        Bad().step(1)
