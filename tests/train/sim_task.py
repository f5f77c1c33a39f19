"""A simulated task for training tests: a scripted model that only follows rules it is given.

The forward model answers an example correctly only when the system prompt holds the
rule for that kind of question; the scripted optimizer model derives the missing rules
from the feedback it is sent. Its first proposal also adds a harmful instruction
("explain your reasoning"), which breaks every answer -- so a gated run must revert it.
Every reply is a pure function of the request, so runs are reproducible (resume tests).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import tracegrad as tg
from tracegrad.testing import MockLLM
from tracegrad.testing.mock import request_text
from tracegrad.train import optimize

RULES = {  # kind: (marker the forward model looks for, rule the optimizer writes)
    "arith": ("number only", "Answer with a number only."),
    "date": ("yyyy-mm-dd", "Write dates as YYYY-MM-DD."),
    "yesno": ("yes or no", "Answer yes or no only."),
}
BAD = "Explain your reasoning step by step."
INITIAL = "You are a helpful assistant."
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def rows(n_each: int, offset: int = 0) -> list[dict]:
    out = []
    for i in range(offset, offset + n_each):
        a, b = i + 2, 3 * i + 1
        out.append({"question": f"What is {a} + {b}?", "answer": str(a + b)})
        d, m, y = i % 27 + 1, i % 12, 2000 + i
        out.append(
            {
                "question": f"Convert {d} {MONTHS[m]} {y} to a date.",
                "answer": f"{y}-{m + 1:02d}-{d:02d}",
            }
        )
        out.append(
            {"question": f"Is {a * 2} greater than {b}?", "answer": "yes" if a * 2 > b else "no"}
        )
        out.append({"question": f"What colour is object number {i}?", "answer": "blue"})
    return out


def write_data(tmp: Path) -> tuple[Path, Path]:
    train, val = tmp / "train.jsonl", tmp / "val.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows(3)))
    val.write_text("".join(json.dumps(r) + "\n" for r in rows(2, offset=10)))
    return train, val


def _answer(question: str) -> tuple[str, str, str]:
    """(kind, terse correct answer, verbose answer)."""
    if m := re.match(r"What is (\d+) \+ (\d+)\?", question):
        n = int(m.group(1)) + int(m.group(2))
        return "arith", str(n), f"The answer is {n}."
    if m := re.match(r"Convert (\d+) (\w+) (\d{4}) to a date\.", question):
        d, month, y = int(m.group(1)), m.group(2), int(m.group(3))
        return "date", f"{y}-{MONTHS.index(month) + 1:02d}-{d:02d}", f"{month} {d}, {y}"
    if m := re.match(r"Is (\d+) greater than (\d+)\?", question):
        yes = int(m.group(1)) > int(m.group(2))
        return "yesno", "yes" if yes else "no", "Yes, it is." if yes else "No, it is not."
    return "plain", "blue", "blue"


def forward_reply(request) -> str:
    system = next((m["content"] for m in request.messages if m["role"] == "system"), "")
    question = request.messages[-1]["content"]
    kind, terse, verbose = _answer(question)
    if BAD.lower() in system.lower():
        return f"{verbose} I explained my reasoning first."
    if kind == "plain" or RULES[kind][0] in system.lower():
        return terse
    return verbose


_KEYS = re.compile(r"^- `([^`]+)`", re.M)


def backward_reply(request) -> str:
    text = request.messages[-1]["content"]
    keys = _KEYS.findall(text.split("## Inputs to give feedback on")[-1])
    fb = text.split("### Feedback on the output")[-1].split("## Inputs to give feedback on")[0]
    return json.dumps(
        {k: f"Because of this input the output got this feedback: {fb.strip()}" for k in keys}
    )


def _section(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[-1].split(end, 1)[0] if start in text else ""


def needed_rules(feedback: str, current: str) -> list[str]:
    evidence = {
        "arith": "got 'The answer is" in feedback,
        "date": re.search(r"expected '\d{4}-\d{2}-\d{2}'", feedback) is not None,
        "yesno": re.search(r"expected '(yes|no)'", feedback) is not None,
    }
    return [
        rule
        for kind, (marker, rule) in RULES.items()
        if evidence[kind] and marker not in current.lower()
    ]


def optimizer_reply(request) -> str:
    """TGD-style: read <current_value> and the feedback, add the first missing rule."""
    text = request.messages[-1]["content"]
    current = _section(text, "<current_value>\n", "\n</current_value>")
    feedback = _section(text, "## Feedback on the current value", "## Constraints")
    todo = needed_rules(feedback, current)
    if not todo:
        return f"<new_value>{current}</new_value>"
    new = f"{current.strip()} {todo[0]}"
    if BAD not in request_text(request):  # never tried: the model's favourite bad idea
        new += f" {BAD}"
    return f"Reasoning: the feedback shows a missing rule.\n<new_value>\n{new}\n</new_value>"


def optimizer_llm(**kw) -> MockLLM:
    def reply(request):
        if request.purpose == "backward":
            return backward_reply(request)
        if request.purpose == "optimizer":
            return optimizer_reply(request)
        raise AssertionError(f"unexpected {request.purpose} request")

    return MockLLM(reply, model="mock-optimizer", **kw)


def forward_llm(**kw) -> MockLLM:
    return MockLLM(forward_reply, model="mock-forward", **kw)


class QA(tg.Module):
    def __init__(self, llm, system: str = INITIAL) -> None:
        self.system = tg.Parameter(system, role="system prompt of the question answerer")
        self.answer = tg.LLMCall(llm, system=self.system)

    def forward(self, question: str) -> tg.Variable:
        return self.answer(tg.Variable(question, role="question"))


def volatile_free(record: dict) -> dict:
    """A history record without what legitimately differs between two identical runs."""
    return {
        k: v
        for k, v in record.items()
        if k not in ("elapsed_s", "usage", "usage_total", "cost_usd")
    }


def run_killed_at_step_2(run_dir: str, tmp: str) -> None:
    """Entry point for the SIGKILL test's subprocess."""
    import os
    import signal

    train, val = write_data(Path(tmp))

    def on_step(rec):
        if rec["step"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    optimize(
        QA(forward_llm()),
        train,
        val,
        metric="exact_match",
        optimizer_engine=optimizer_llm(),
        steps=8,
        batch_size=4,
        seed=3,
        run_dir=run_dir,
        progress=False,
        on_step=on_step,
        concurrency=4,
    )
