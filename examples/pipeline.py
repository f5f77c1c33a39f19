"""A two-step pipeline optimized with the Python API: two LLM calls and a Python op between.

    question --extract (LLM)--> object list --parse_items (@tg.op)--> table --count (LLM)--> answer

Both LLM steps have a trainable system prompt. ``parse_items`` is ordinary Python that
raises when the extraction step writes a line it cannot read; tracegrad turns that
exception into feedback for the *extraction* prompt, while wrong counts become feedback
for the *counting* prompt. ``tracegrad.train.optimize`` runs the loop: minibatches,
backward, TGD rewrites, validation gating, a run directory.

Offline by default: a scripted MockLLM world plays the model. Its extraction step writes
"- two pianos" (which ``parse_items`` rejects) unless told to write "<quantity> x
<object>"; its counting step counts every object unless told to count only the asked
category. Its feedback step reads each request (the step, its output, the error or the
verdict) and suggests the missing instruction; its optimizer step adds suggested
instructions to the prompt it is shown. The scores rise only if the feedback really
flows backwards through the op to the right prompt. With a real model:

    python examples/pipeline.py --model openai:gpt-4o-mini [--base-url URL] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from collections import Counter

import tracegrad as tg
from tracegrad.demo import category_of, make_examples, parse_question
from tracegrad.llm import LLM
from tracegrad.llm.base import Request
from tracegrad.testing import MockLLM
from tracegrad.train import optimize

# -- the pipeline ---------------------------------------------------------------------------


@tg.op
def parse_items(text: str) -> str:
    """Read lines of the form '<quantity> x <object>' into a normalized table."""
    rows = []
    for line in text.strip().splitlines():
        if not line.strip():
            continue
        m = re.fullmatch(r"\s*(\d+)\s*x\s*(.+?)\s*", line)
        if not m:
            raise ValueError(f"cannot read the line {line.strip()!r}: expected '<quantity> x "
                             "<object>' with the quantity in digits")
        rows.append(f"{int(m.group(1))} x {m.group(2).lower()}")
    if not rows:
        raise ValueError("the object list is empty")
    return "\n".join(rows)


class CountingPipeline(tg.Module):
    def __init__(self, llm: tg.Engine) -> None:
        self.extract_prompt = tg.Parameter(
            "List every object mentioned in the text, one per line.",
            role="system prompt of the extraction step (turns a sentence into an object list)",
            constraints=["Keep it to at most four sentences."],
        )
        self.count_prompt = tg.Parameter(
            "Use the object list to answer the question.",
            role="system prompt of the counting step (answers from the object list)",
            constraints=["Keep it to at most four sentences."],
        )
        self.extract = tg.LLMCall(llm, system=self.extract_prompt, name="extract",
                                  role="object list written by the extraction step")
        self.count = tg.LLMCall(llm, system=self.count_prompt, name="count",
                                role="answer of the counting step")

    def forward(self, question: str) -> tg.Variable:
        listing = self.extract(tg.Variable(question, role="question"))
        table = parse_items(listing)
        message = tg.format("Objects:\n{{ table }}\n\nQuestion: {{ question }}",
                            role="input of the counting step", table=table, question=question)
        return self.count(message)


# -- the offline world: a scripted model that reacts to each request ---------------------

EXTRACT_FIX = "Write each object on its own line as '<quantity> x <object>', with the quantity in digits."
COUNT_FIX = "Count only the objects that belong to the category named in the question; skip all other objects."
_SUGGEST = re.compile(r'Add this instruction: "([^"]+)"')


def _system(request: Request) -> str:
    return next((m["content"] for m in request.messages if m["role"] == "system"), "")


def _user(request: Request) -> str:
    return "\n".join(m["content"] for m in request.messages if m["role"] == "user")


def world(request: Request) -> str:
    if request.purpose == "backward":
        return _feedback(_user(request))
    if request.purpose == "optimizer":
        return _rewrite(_user(request))
    system, user = _system(request), _user(request)
    if user.startswith("Objects:"):  # the counting step
        table, question = user.split("\n\nQuestion: ", 1)
        asked = parse_question(question)
        rows = [re.fullmatch(r"(\d+) x (.+)", ln) for ln in table.splitlines()[1:]]
        only_asked = "only the objects that belong" in system.lower()
        total = sum(int(m.group(1)) for m in rows if m and (
            not only_asked or asked is None or category_of(m.group(2)) == asked[1]))
        return f"The answer is {total}."
    parsed = parse_question(user)  # the extraction step
    if parsed is None:
        return "(no objects)"
    items, _ = parsed
    if "<quantity> x <object>" in system:
        return "\n".join(f"{qty} x {name}" for name, qty, _ in items)
    word = {1: "a", 2: "two", 3: "three"}
    return "\n".join(f"- {word.get(qty, qty)} {name}" for name, qty, _ in items)


def _feedback(text: str) -> str:
    """The scripted feedback model: blame the prompt whose step caused the problem."""
    step = re.search(r"^## Step `([^`]+)`", text, re.M)
    keys = re.findall(r"^- `([^`]+)`:", text.split("## Inputs to give feedback on")[-1], re.M)
    verdict = text.split("### Feedback on the output", 1)[-1]
    advice = "no change needed"
    if step and step.group(1) == "extract" and "cannot read the line" in verdict:
        advice = ("The next step could not read this list because the quantities are words. "
                  f'Add this instruction: "{EXTRACT_FIX}"')
    elif step and step.group(1) == "count" and "Wrong" in verdict:
        wanted = re.search(r"expected (\d+), got (\d+)", verdict)
        if wanted and int(wanted.group(2)) > int(wanted.group(1)):
            advice = ("The answer also counted objects of other categories. "
                      f'Add this instruction: "{COUNT_FIX}"')
    return json.dumps({k: advice if k == "system" else "no change needed" for k in keys})


def _rewrite(text: str) -> str:
    """The scripted optimizer: add the most requested instruction that is still missing."""
    current = re.search(r"<current_value>\n(.*?)\n</current_value>", text, re.S)
    value = current.group(1) if current else ""
    wanted = Counter(_SUGGEST.findall(text.split("## Constraints", 1)[0]))
    for sentence, _ in wanted.most_common():
        if sentence not in value:
            value = f"{value.rstrip()} {sentence}"
            break
    return f"<new_value>\n{value}\n</new_value>"


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> object:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="e.g. openai:gpt-4o-mini (default: the offline mock world)")
    ap.add_argument("--base-url", help="an OpenAI-compatible server")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--run-dir", help="where to keep the run (default: a temporary directory)")
    args = ap.parse_args(argv)

    if args.model:
        llm = LLM(args.model, base_url=args.base_url)
        label = args.model
    else:
        llm = MockLLM(world, model="scripted-world")
        label = "offline scripted MockLLM world (SIMULATED)"
    rows = make_examples(36, seed=3)
    train, val = rows[:20], rows[20:]
    pipeline = CountingPipeline(llm)
    run_dir = args.run_dir or tempfile.mkdtemp(prefix="tracegrad-pipeline-")
    print(f"model: {label}")
    result = optimize(pipeline, train, val, metric="numeric", optimizer="tgd",
                      steps=args.steps, batch_size=4, engine=llm, optimizer_engine=llm,
                      run_dir=run_dir, progress=False,
                      on_step=lambda r: print(f"step {r['step']}: {r['result']}, best "
                                              f"{r['best_score']:.2f}"))
    print(f"validation score: {result.baseline_score:.2f} -> {result.best_score:.2f}")
    for name, value in result.best_state.items():
        print(f"{name}: {value}")
    print(f"run dir: {result.run_dir}")
    return result


if __name__ == "__main__":
    main()
