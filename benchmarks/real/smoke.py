"""Offline smoke run of the real-API harness: every framework against tracegrad's fake server.

    python benchmarks/real/smoke.py                       # all four frameworks, shipped sample
    python benchmarks/real/smoke.py --frameworks textgrad --peers-python PATH

SIMULATED: the "models" are :func:`make_reply`, a scripted stand-in, so every number this
produces (accuracy, calls, dollars) proves only that the runners work end to end -- that
each framework's requests reach the server, its proposals are parsed and its optimized
prompt is what the test evaluation runs. The records are written with ``"simulated":
true`` to ``SIMULATED-smoke.jsonl`` and must never be read as results.

The stand-in task model answers a known question correctly only when the prompt it is sent
contains :data:`IMPROVED` ("count each item ..."), and the stand-in reflection model
proposes that sentence in whichever format the framework asked for (tracegrad's
``<new_value>``, TextGrad's ``<IMPROVED_VARIABLE>``, DSPy's ``[[ ## field ## ]]`` or JSON
fields), so a run whose plumbing works shows test accuracy going up.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))

SAMPLE = ROOT / "tests" / "benchmarks" / "data" / "bbh_object_counting_sample.json"
IMPROVED = "Count each item one by one, add them up, and reply with only the final number."
_FIELDS = re.compile(r"Your output fields are:\n(.*?)(?:\nAll interactions|\n\n|$)", re.S)
_FIELD = re.compile(r"^\d+\. `([^`]+)` \(([^)]*)\)", re.M)


def _text(body: dict[str, Any]) -> str:
    out = []
    for m in body.get("messages") or []:
        c = m.get("content")
        if isinstance(c, list):
            c = "\n".join(str(p.get("text", "")) for p in c if isinstance(p, dict))
        out.append(str(c))
    return "\n".join(out)


def _value(name: str, typ: str, answer: str) -> Any:
    t = typ.lower()
    if name == "answer":
        return answer
    if "instruction" in name or "prompt" in name:
        return IMPROVED
    if t.startswith("bool"):
        return True
    if t.startswith("int"):
        return 1
    if t.startswith("float"):
        return 1.0
    if t.startswith("list"):
        return ["count each item"]
    return "Count each item one by one."


def make_reply(answers: dict[str, str]) -> Callable[[dict[str, Any]], str]:
    """The fake server's reply function for ``answers`` ({question: expected answer})."""
    known = sorted(answers, key=len, reverse=True)

    def task_answer(body: dict[str, Any]) -> str:
        # the question asked is in the last user message (demos may quote others before it)
        users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
        last = _text({"messages": users[-1:]})
        q = next((k for k in known if k in last), None)
        if q is None:
            return "8"
        if IMPROVED.lower()[:15] in _text(body).lower():
            return answers[q]
        wrong = str(int(answers[q]) + 1) if answers[q].isdigit() else answers[q][::-1]
        return f"I think there are {wrong} of them."

    def reply(body: dict[str, Any]) -> str:
        text = _text(body)
        # tracegrad's meta-prompts (feedback, rewrite, summary)
        if "## Inputs to give feedback on" in text:
            keys = re.findall(r"^- `([^`]+)`:", text.split("## Inputs to give feedback on")[-1],
                              re.M)
            return json.dumps({k: "Tell the model to count each item one by one." for k in keys})
        if "<current_value>" in text:
            return f"<new_value>\n{IMPROVED}\n\n{{{{ question }}}}\n</new_value>"
        if "Feedback items:" in text:
            return "Tell the model to count each item one by one."
        # TextGrad: the optimizer step, then the backward (feedback) requests
        if "<IMPROVED_VARIABLE>" in text:
            return f"<IMPROVED_VARIABLE>{IMPROVED}</IMPROVED_VARIABLE>"
        if "<OBJECTIVE_FUNCTION>" in text or "You will give feedback to a variable" in text:
            return "The system prompt should tell the model to count each item one by one."
        # DSPy's adapters: fill the output fields the request lists
        m = _FIELDS.search(text)
        if m:
            fields = _FIELD.findall(m.group(1))
            task = [n for n, _ in fields] in (["answer"], ["reasoning", "answer"])
            ans = task_answer(body) if task else ""
            values = {n: ("Let me count." if n == "reasoning" else _value(n, t, ans))
                      for n, t in fields}
            if "JSON" in text.split("Your output fields are:")[-1][-2000:] and not task:
                return json.dumps(values)
            return "".join(f"[[ ## {n} ## ]]\n{v if isinstance(v, str) else json.dumps(v)}\n\n"
                           for n, v in values.items()) + "[[ ## completed ## ]]"
        return task_answer(body)

    return reply


def sample_answers(path: Path = SAMPLE) -> dict[str, str]:
    doc = json.loads(path.read_text())
    return {ex["input"]: str(ex["target"]) for ex in doc["examples"]}


def main(argv: list[str] | None = None) -> int:
    from real import run as real_run
    from tracegrad.testing import FakeOpenAIServer

    ap = argparse.ArgumentParser(description="Offline, SIMULATED smoke run of run.py")
    ap.add_argument("--frameworks", default="tracegrad,dspy-gepa,dspy-mipro,textgrad")
    ap.add_argument("--peers-python", default=None)
    ap.add_argument("--metric-calls", type=int, default=None,
                    help="the peers' rollout budget (default: what tracegrad used)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("bench-real-runs") / "smoke")
    ap.add_argument("--out", type=Path, default=Path("bench-real-runs") / "SIMULATED-smoke.jsonl")
    a = ap.parse_args(argv)
    with FakeOpenAIServer(make_reply(sample_answers())) as srv:
        args = ["--task", "object_counting", "--frameworks", a.frameworks,
                "--model", "openai:gpt-4o-mini", "--optimizer-model", "openai:gpt-4o",
                "--base-url", srv.url, "--steps", str(a.steps), "--data", str(SAMPLE),
                "--workdir", str(a.workdir),
                "--out", str(a.out), "--yes", "--simulated", "--timeout", "600",
                "--num-threads", "2"]
        if a.metric_calls:
            args += ["--metric-calls", str(a.metric_calls)]
        if a.peers_python:
            args += ["--peers-python", a.peers_python]
        rc = real_run.main(args)
        print(f"SIMULATED: the fake server answered {srv.request_count} requests",
              file=sys.stderr)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
