"""The benchmark workloads, shared by every runner and by the server's reply router.

Standard library only: this module is imported by ``run_tracegrad.py`` (tracegrad's venv),
by ``peers/run_textgrad.py`` and ``peers/run_trace.py`` (the peers' venv) and by the
server (``replies.py``). Everything that must be *equal* across frameworks lives here:
the data, the initial prompts, the metric and its feedback text, the judge instruction.

Trainable values carry a stage marker such as ``[qa]`` in their first words. The server
finds the marker in an optimizer request (inside the framework's own "current value"
section) and answers with the improved value for that stage, so every framework ends a
step with the same new values and the next step does the same work.
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

MODEL = "bench-model"

# -- workload 1: prompt optimization, one LLM call per example ---------------------------------
W1_BATCH = 16
W1_PROMPT = (
    "[qa] You are a helpful assistant. Answer the arithmetic question that the user asks."
)

# -- workload 2: a chain of three LLM calls with three trainable prompts -------------------
W2_BATCH = 8
W2_PROMPTS = {
    "extract": "[extract] Read the question and list the numbers it mentions, as 'Numbers: a, b'.",
    "solve": "[solve] You get a line 'Numbers: a, b'. Add the numbers and reply 'Sum: s'.",
    "format": "[format] You get a line 'Sum: s'. Reply with the final answer as 'Answer: s'.",
}

# -- workload 3: instance optimization of one answer, 5 iterations ---------------------------
W3_ITERATIONS = 5
W3_QUESTION = "What is 17 + 25?"
W3_ANSWER = (
    "[solution] To compute 17 + 25 we add the tens and the ones separately: 10 + 20 = 30 "
    "and 7 + 5 = 12, so the total is 30 + 12 = 32. Answer: 32"
)
W3_JUDGE = (
    "[judge] Evaluate the solution to the question 'What is 17 + 25?'. Check every "
    "arithmetic step and the final answer, and criticize concretely what is wrong."
)

# What the (simulated) optimizer model writes for each stage marker.
IMPROVED = {
    "qa": "[qa] You are a careful calculator. Add the tens and the ones separately, check the "
          "sum once more, and answer with the final number.",
    "extract": "[extract] Read the question and list exactly the two numbers it mentions, in "
               "order, as 'Numbers: a, b'.",
    "solve": "[solve] You get a line 'Numbers: a, b'. Add the tens and the ones separately, "
             "check the result, and reply 'Sum: s'.",
    "format": "[format] You get a line 'Sum: s'. Copy s unchanged and reply 'Answer: s'.",
    "solution": "[solution] To compute 17 + 25 we add the tens and the ones separately: "
                "10 + 20 = 30 and 7 + 5 = 12, so the total is 30 + 12 = 42. Check: "
                "42 - 25 = 17. Answer: 42",
}

MARKER = re.compile(r"\[(qa|extract|solve|format|solution|judge)\]")


def questions(n: int, offset: int = 0) -> list[tuple[str, int]]:
    """``n`` deterministic addition questions and their answers."""
    out = []
    for i in range(offset, offset + n):
        a = 11 + (i * 7) % 53
        b = 5 + (i * 13) % 41
        out.append((f"Q{i + 1}: What is {a} + {b}?", a + b))
    return out


def simulated_sum(a: int, b: int) -> int:
    """The simulated model gets about a third of the sums wrong, always the same ones."""
    s = a + b
    return s + 1 if (a * b) % 3 == 0 else s


_INT = re.compile(r"-?\d+")


def last_int(text: str) -> int | None:
    found = _INT.findall(text or "")
    return int(found[-1]) if found else None


def metric(prediction: str, expected: int) -> tuple[float, str]:
    """Exact match on the last number; the explanation is the feedback (no judge call)."""
    got = last_int(prediction)
    if got == expected:
        return 1.0, f"Correct: expected {expected} and got it."
    return 0.0, f"Wrong: expected {expected}, got {got if got is not None else 'no number'}."


# -- runner helpers --------------------------------------------------------------------------


class StepClock:
    """Per-step wall-clock windows, in the server's clock (time.time) and perf_counter."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def __enter__(self) -> StepClock:
        self._t0 = time.time()
        self._p0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.steps.append({
            "t0": self._t0,
            "t1": time.time(),
            "wall_s": time.perf_counter() - self._p0,
        })


def emit(result: dict[str, Any], path: str | None) -> None:
    text = json.dumps(result, indent=1)
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text + "\n")


def check_values(got: dict[str, str], expected: dict[str, str]) -> list[str]:
    """Problems with the values after a step (the run is only valid if every update applied)."""
    problems = []
    for k, v in expected.items():
        if got.get(k, "").strip() != v.strip():
            problems.append(f"{k}: expected the improved value, got {got.get(k, '')[:80]!r}")
    return problems
