"""Solution optimization: improve an answer itself, not the prompt that produced it.

The worked solution to a word problem is a Parameter. A judge (TextLoss) checks it, its
criticism is the feedback, and TGD rewrites the solution; repeat until the judge has
nothing left to fix. This is the TextGrad "solution optimization" setting.

Runs offline by default on a scripted MockLLM whose judge really checks the arithmetic
and whose optimizer really applies the judge's corrections. To use a real model:

    python examples/solution_optimization.py --model openai:gpt-4o-mini [--base-url URL]
"""

from __future__ import annotations

import argparse
import re

import tracegrad as tg
from tracegrad.llm.base import Request
from tracegrad.optim import TGD
from tracegrad.testing import MockLLM
from tracegrad.testing.mock import request_text

PROBLEM = (
    "Pens cost 17 cents each. Ana buys 24 pens and pays with a 5 dollar bill "
    "(500 cents). How much change does she get?"
)
DRAFT = (
    "The pens cost 17 * 24 = 398 cents.\n"
    "The change is 500 - 398 = 102 cents.\n"
    "Answer: Ana gets 102 cents back."
)
INSTRUCTION = (
    f"Problem: {PROBLEM}\n"
    "Check every arithmetic step of the solution. Name each wrong step and give the correct "
    "result. If every step is right, say 'No change needed.'"
)

# -- the offline stand-in for a model: rules that read the request ------------------------

_STEP = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def _judge(text: str) -> str:
    work = text.split("<work>", 1)[1].split("</work>", 1)[0]
    wrong = []
    for a, op, b, c in _STEP.findall(work):
        right = _OPS[op](int(a), int(b))
        if right != int(c):
            wrong.append(f"The step `{a} {op} {b} = {c}` is wrong: {a} {op} {b} = {right}.")
    return " ".join(wrong) or "No change needed."


def _optimize(text: str) -> str:
    value = text.split("<current_value>\n", 1)[1].split("\n</current_value>", 1)[0]
    feedback = text.split("## Feedback on the current value", 1)[1].split("## Constraints", 1)[0]
    fixes = re.findall(r"`(\d+) ([-+*]) (\d+) = (\d+)` is wrong: \d+ [-+*] \d+ = (\d+)", feedback)
    for a, op, b, bad, good in fixes:
        value = value.replace(f"{a} {op} {b} = {bad}", f"{a} {op} {b} = {good}")
        # results computed from the wrong number are wrong too: carry the correction forward
        value = re.sub(rf"\b{bad}\b", good, value)
    return f"I applied {len(fixes)} correction(s).\n<new_value>\n{value}\n</new_value>"


def mock_llm() -> MockLLM:
    def reply(request: Request) -> str:
        text = request_text(request)
        if request.purpose == "judge":
            return _judge(text)
        if request.purpose == "optimizer":
            return _optimize(text)
        raise AssertionError(f"unexpected request: {request.purpose}")

    return MockLLM(reply)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a real model, e.g. openai:gpt-4o-mini (default: offline mock)")
    ap.add_argument("--base-url", help="OpenAI-compatible server URL")
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    if args.model:
        from tracegrad.llm import LLM

        engine = LLM(args.model, base_url=args.base_url)
    else:
        engine = mock_llm()
        print("(offline: scripted MockLLM; pass --model to use a real model)")

    solution = tg.Parameter(DRAFT, role="step-by-step solution to a word problem", name="solution")
    judge = tg.TextLoss(INSTRUCTION, engine=engine)
    optimizer = TGD([solution], engine, gate=True)  # gate: no call once the judge is satisfied

    print(f"before:\n{solution.value}\n")
    for step in range(1, args.steps + 1):
        optimizer.zero_grad()
        loss = judge(solution)
        print(f"step {step} judge: {loss.value}")
        loss.backward(propagator=optimizer.propagator())
        result = optimizer.step()
        if not result.updated:
            break
    print(f"\nafter:\n{solution.value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
