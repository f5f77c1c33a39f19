"""Code optimization: let the optimizer rewrite the source of a Python function.

``@tg.op(trainable=True)`` makes the function's source a Parameter. Each example's
result is scored by exact match; the trace propagator hands the function the whole
trace (inputs, outputs, the metric's verdicts) and TraceOptimizer rewrites the source
in one call. A rewrite is accepted only if it parses, keeps the signature and imports
only allowed modules; it then runs in the sandboxed subprocess.

Runs offline by default on a scripted MockLLM whose "optimizer" reads the expected and
actual outputs in the request and searches for string operations that explain the
difference. To use a real model:

    python examples/code_optimization.py --model openai:gpt-4o-mini [--base-url URL]
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import re

import tracegrad as tg
from tracegrad.llm.base import Request
from tracegrad.optim import TraceOptimizer
from tracegrad.testing import MockLLM
from tracegrad.testing.mock import request_text

DATA = [
    ("  ada   lovelace ", "Ada Lovelace"),
    ("GRACE HOPPER", "Grace Hopper"),
    ("alan turing\t", "Alan Turing"),
    ("Barbara  Liskov", "Barbara Liskov"),
]


@tg.op(trainable=True)
def clean_name(raw: str) -> str:
    """Turn a name as a user typed it into 'First Last' form."""
    return raw.strip()


# -- the offline stand-in for a model: a tiny program-repair search -----------------------

_TRANSFORMS = {  # name -> (python template, function)
    "collapse whitespace": ('" ".join(({x}).split())', lambda s: " ".join(s.split())),
    "strip": ("({x}).strip()", str.strip),
    "title case": ("({x}).title()", str.title),
    "lower case": ("({x}).lower()", str.lower),
    "upper case": ("({x}).upper()", str.upper),
}
_QUOTED = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""


def _repair(text: str) -> str:
    name = re.search(r"^### (\S+__code__)$", text, re.M).group(1)
    section = text.split(f"### {name}\n", 1)[1]
    code = section.split("<value>\n", 1)[1].split("\n</value>", 1)[0] + "\n"
    feedback = text.split("## Feedback on the result", 1)[1]
    pairs = [(ast.literal_eval(e), ast.literal_eval(g))
             for e, g in re.findall(rf"expected ({_QUOTED}), got ({_QUOTED})", feedback)]
    if not pairs:
        return json.dumps({"reasoning": "nothing to fix", "values": {}})
    for n in range(1, 4):
        for combo in itertools.product(_TRANSFORMS, repeat=n):
            def apply(s: str, combo: tuple[str, ...] = combo) -> str:
                for t in combo:
                    s = _TRANSFORMS[t][1](s)
                return s

            if all(apply(got) == exp for exp, got in pairs):
                lines = code.rstrip("\n").split("\n")
                i = max(k for k, ln in enumerate(lines) if ln.strip().startswith("return "))
                indent, expr = lines[i].split("return ", 1)
                for t in combo:
                    expr = _TRANSFORMS[t][0].format(x=expr)
                lines[i] = f"{indent}return {expr}"
                return json.dumps({
                    "reasoning": f"The outputs differ from the expected ones by: {', '.join(combo)}.",
                    "values": {name: "\n".join(lines) + "\n"},
                })
    return json.dumps({"reasoning": "no simple fix found", "values": {}})


def mock_llm() -> MockLLM:
    def reply(request: Request) -> str:
        if request.purpose == "optimizer":
            return _repair(request_text(request))
        raise AssertionError(f"unexpected request: {request.purpose}")

    return MockLLM(reply)


def evaluate() -> tuple[tg.Variable, float]:
    metric = tg.MetricLoss(lambda got, exp: got == exp, name="exact_match")
    losses = []
    for raw, expected in DATA:
        try:
            out = clean_name(tg.Variable(raw, role="name as typed"))
            losses.append(metric(out, expected))
        except tg.ExecutionError as e:  # a crash or timeout is feedback too
            losses.append(e.variable)
    loss = tg.aggregate(losses)
    return loss, loss.score or 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a real model, e.g. openai:gpt-4o-mini (default: offline mock)")
    ap.add_argument("--base-url", help="OpenAI-compatible server URL")
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    if args.model:
        from tracegrad.llm import LLM

        engine = LLM(args.model, base_url=args.base_url)
    else:
        engine = mock_llm()
        print("(offline: scripted MockLLM; pass --model to use a real model)")

    optimizer = TraceOptimizer(clean_name.parameters(), engine)
    loss, score = evaluate()
    print(f"before (accuracy {score:.2f}):\n{clean_name.code.value}")
    for step in range(1, args.steps + 1):
        if score >= 1.0:
            break
        optimizer.zero_grad()
        loss.backward(propagator=optimizer.propagator())
        result = optimizer.step()
        for event in result.events:
            print(f"step {step} event: {event['event']}: {event['detail']}")
        loss, score = evaluate()
        optimizer.record_score(score)
        print(f"step {step}: accuracy {score:.2f}")
    print(f"after (accuracy {score:.2f}):\n{clean_name.code.value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
