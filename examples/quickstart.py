"""Quickstart: one forward pass, one backward pass, one optimizer step.

A QA model answers a counting question; an LLM judge criticises the answer; the textual
propagator turns the criticism into feedback on the system prompt; TGD rewrites it.

Offline by default: a scripted MockLLM plays the QA model (it counts correctly only when
its system prompt tells it to count each item), the judge, the backward model and the
optimizer -- each reply is computed from the request it receives. With a real model:

    python examples/quickstart.py --model openai:gpt-4o-mini [--base-url URL]
"""

from __future__ import annotations

import argparse
import json
import re

import tracegrad as tg
from tracegrad.llm.base import Request
from tracegrad.testing import MockLLM
from tracegrad.testing.mock import request_text

QUESTION = "I have two apples, a pear and a banana. How many fruits do I have?"


def mock_llm() -> MockLLM:
    def reply(request: Request) -> str:
        text = request_text(request)
        if request.purpose == "forward":
            system = request.messages[0]["content"].lower()
            items = re.findall(r"\b(a|an|one|two|three)\b (?:\w+)", request.messages[-1]["content"])
            words = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3}
            if "each item" in system:
                return str(sum(words[w] for w in items))
            return "I think 3."  # the careless model counts kinds, not items
        if request.purpose == "judge":
            answer = text.split("<work>", 1)[1].split("</work>", 1)[0]
            if "4" in answer:
                return "Correct."
            return "Wrong: the answer counted kinds of fruit instead of every item; there are 4."
        if request.purpose == "backward":
            keys = re.findall(r"^- `([^`]+)`", text.split("## Inputs to give feedback on")[-1], re.M)
            return json.dumps(
                {k: "Tell the model to count each item separately, including repeats." for k in keys}
            )
        if request.purpose == "optimizer":
            value = text.split("<current_value>\n", 1)[1].split("\n</current_value>", 1)[0]
            if "count each item" in text.lower():
                value = value.rstrip() + " Count each item separately before answering."
            return f"<new_value>\n{value}\n</new_value>"
        raise AssertionError(f"unexpected request: {request.purpose}")

    return MockLLM(reply)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a real model, e.g. openai:gpt-4o-mini (default: offline mock)")
    ap.add_argument("--base-url", help="OpenAI-compatible server URL")
    args = ap.parse_args()
    if args.model:
        from tracegrad.llm import LLM

        engine = LLM(args.model, base_url=args.base_url)
    else:
        engine = mock_llm()
        print("(offline: scripted MockLLM; pass --model to use a real model)")
    tg.set_backward_llm(engine)

    system = tg.Parameter("Answer the question.", role="system prompt of the QA model", name="system")
    qa = tg.LLMCall(engine, system=system)
    optimizer = tg.TGD([system])

    print(f"before: {system.value!r}")
    answer = qa(tg.Variable(QUESTION, role="question"))
    loss = tg.TextLoss("Is the answer correct? Criticize it.")(answer)
    print(f"answer: {answer.value!r}  judge: {loss.value}")
    loss.backward()
    print(f"feedback on the prompt: {system.grads[0].text if system.grads else '(none)'}")
    optimizer.step()
    print(f"after:  {system.value!r}")
    with tg.no_grad():
        print(f"new answer: {qa(QUESTION).value!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
