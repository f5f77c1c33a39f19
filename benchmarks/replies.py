"""Deterministic replies that keep every framework's parser happy.

The benchmark server answers every chat request with :func:`reply`. It recognises by
content what a request is -- a forward call of one of the workloads, a judge call, a
feedback ("gradient") request or an optimizer request of tracegrad, TextGrad or Trace --
and answers in the format that framework parses:

=========================  ==============================================================
kind                       recognised by / answered with
=========================  ==============================================================
``textgrad.optimizer``     TGD system prompt; ``<IMPROVED_VARIABLE>new</IMPROVED_VARIABLE>``
``textgrad.gradient``      TextGrad's backward system prompt; feedback text
``trace.optimizer``        OptoPrime's output-format prompt; JSON reasoning/answer/suggestion
``tracegrad.backward``     ``textual_backward`` prompt; JSON {key: feedback} for each
                           key listed under "## Inputs to give feedback on"
``tracegrad.tgd``          ``tgd_update`` prompt; ``<new_value>new</new_value>``
``tracegrad.trace``        ``trace_update`` prompt; JSON {"reasoning", "values"}
``tracegrad.summary``      ``feedback_summary`` prompt; a condensed list
``judge``                  the ``[judge]`` marker (workload 3); a critique
``forward``                a stage marker in the system prompt; the stage's answer
=========================  ==============================================================

Feedback texts depend on the request's content (the numbers expected and produced), so
that feedback from different examples is distinct, as a real model's would be: a
framework that de-duplicates feedback gains nothing from a benchmark artefact.

Replies that are repairs (the request carries an earlier assistant reply) are answered
the same way and counted by the server log as ``repair``: a correct run has none.
"""

from __future__ import annotations

import json
import re
from typing import Any

from common import IMPROVED, MARKER, W3_QUESTION, simulated_sum

# Fingerprints: the opening words of each framework's meta-prompts. tracegrad's are read
# from its prompt files when tracegrad is importable, so rewording a prompt file does not
# break the benchmark.
TEXTGRAD_OPTIMIZER = "You are part of an optimization system that improves text (i.e., variable)."
TEXTGRAD_GRADIENT = "You are part of an optimization system that improves a given text (i.e. the variable). You are the gradient"
TRACE_OUTPUT_FORMAT = "Output_format: Your output should be in the following json format"

_TRACEGRAD_PROMPTS = {
    "textual_backward": "You help improve a program made of language-model calls.",
    "tgd_update": "You improve one variable of a program",
    "trace_update": "You improve the trainable parameters of a program.",
    "feedback_summary": "You condense feedback.",
    "opro_update": "You are an optimizer. A program has some parameters",
    "judge_system": "You are a strict, specific evaluator.",
}
try:  # pragma: no cover - depends on the environment
    from tracegrad import prompts as _tg_prompts

    for _name in list(_TRACEGRAD_PROMPTS):
        try:
            _TRACEGRAD_PROMPTS[_name] = " ".join(_tg_prompts.load(_name).split())[:60]
        except KeyError:
            pass
except ImportError:  # the server may run without tracegrad
    pass

_KIND_OF_TRACEGRAD = {
    "textual_backward": "tracegrad.backward",
    "tgd_update": "tracegrad.tgd",
    "trace_update": "tracegrad.trace",
    "feedback_summary": "tracegrad.summary",
    "opro_update": "tracegrad.opro",
}


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)


def _norm(s: str) -> str:
    return " ".join(s.split())


def split(body: dict[str, Any]) -> tuple[str, str, bool]:
    """(system text, first user text, is_repair) of a chat request body."""
    system, user, repair = "", "", False
    for m in body.get("messages") or []:
        role = m.get("role")
        if role == "system" and not system:
            system = _text(m.get("content"))
        elif role == "user" and not user:
            user = _text(m.get("content"))
        elif role == "assistant":
            repair = True
    return system, user, repair


def classify(body: dict[str, Any]) -> str:
    system, user, _ = split(body)
    s = _norm(system)
    if s.startswith(TEXTGRAD_OPTIMIZER):
        return "textgrad.optimizer"
    if s.startswith(TEXTGRAD_GRADIENT):
        return "textgrad.gradient"
    if TRACE_OUTPUT_FORMAT in system:
        return "trace.optimizer"
    for name, fp in _TRACEGRAD_PROMPTS.items():
        if name in _KIND_OF_TRACEGRAD and s.startswith(fp):
            return _KIND_OF_TRACEGRAD[name]
    if "[warmup]" in system:
        return "warmup"
    if "[judge]" in system or "[judge]" in user:
        return "judge"
    m = MARKER.search(system)
    if m:
        return "forward"
    return "unknown"


# -- content ------------------------------------------------------------------------------

_ADVICE = {
    "qa": "the prompt should tell the model to add the tens and the ones separately and to "
          "check the sum once more before it answers, and to end with the bare number",
    "extract": "the prompt should ask for exactly the two numbers of the question, in order, "
               "so that the next step receives clean input",
    "solve": "the prompt should make the model add the tens and the ones separately and check "
             "the result, since the sums it writes are sometimes off by one",
    "format": "the prompt should insist that the number is copied unchanged from the 'Sum:' line",
    "solution": "the solution must redo the final addition 30 + 12, which is 42 and not 32, "
                "and state the corrected final answer",
}

_WRONG = re.compile(r"[Ww]rong[^:]*: expected (\d+), got (\S+?)\.")
_RIGHT = re.compile(r"Correct: expected (\d+)")


def _outcomes(text: str) -> tuple[list[tuple[str, str]], int]:
    return _WRONG.findall(text), len(_RIGHT.findall(text))


def feedback_text(about: str, text: str, stage: str | None) -> str:
    """Feedback that names the concrete failures found in ``text`` (bounded in length)."""
    wrong, right = _outcomes(text)
    advice = _ADVICE.get(stage or "", "it should state the intended output format precisely")
    if not wrong and right:
        return (f"The output for {about} matched the expected answer ({right} correct run(s)); "
                "no change needed beyond keeping the instruction explicit.")
    if not wrong:
        return f"For {about}: {advice}."
    shown = ", ".join(f"expected {e} but got {g}" for e, g in wrong[:6])
    more = f" and {len(wrong) - 6} more" if len(wrong) > 6 else ""
    return (f"For {about}: {len(wrong)} run(s) produced a wrong number ({shown}{more}). "
            f"Because language models slip on carries, {advice}. Keep the rest of the "
            "instruction, it already produces the right format.")


def _stage_in(text: str) -> str | None:
    m = MARKER.search(text or "")
    return m.group(1) if m else None


def _between(text: str, start: str, end: str) -> str:
    i = text.find(start)
    if i < 0:
        return ""
    j = text.find(end, i + len(start))
    return text[i + len(start): j if j >= 0 else len(text)]


def improved(value: str) -> str | None:
    stage = _stage_in(value)
    return IMPROVED.get(stage) if stage else None


# -- per kind --------------------------------------------------------------------------------


def _forward(system: str, user: str) -> str:
    stage = _stage_in(system)
    if stage == "qa":
        m = re.search(r"What is (\d+) \+ (\d+)", user)
        if not m:
            return "I cannot find the question."
        a, b = int(m.group(1)), int(m.group(2))
        return f"Adding {a} and {b} gives the result. The answer is {simulated_sum(a, b)}."
    if stage == "extract":
        m = re.search(r"What is (\d+) \+ (\d+)", user)
        return f"Numbers: {m.group(1)}, {m.group(2)}" if m else "Numbers: none"
    if stage == "solve":
        m = re.search(r"Numbers: (\d+), (\d+)", user)
        return f"Sum: {simulated_sum(int(m.group(1)), int(m.group(2)))}" if m else "Sum: unknown"
    if stage == "format":
        m = re.search(r"Sum: (\S+)", user)
        return f"Answer: {m.group(1)}" if m else "Answer: unknown"
    return "OK."


def _judge(system: str, user: str) -> str:
    work = user if "[solution]" in user else system
    if "Answer: 42" in work:
        return (f"The solution to '{W3_QUESTION}' is correct: 30 + 12 = 42 and the final answer "
                "42 matches. A short check of the result would make it easier to trust.")
    return (f"The solution to '{W3_QUESTION}' has an arithmetic error in its last step: 30 + 12 "
            "was written as 32 but is 42, so the final answer 32 is wrong. Redo the final "
            "addition and state the corrected answer.")


def _textgrad_gradient(user: str) -> str:
    role = _between(user, "<ROLE>", "</ROLE>").strip() or "the variable"
    variable = _between(user, "<VARIABLE>", "</VARIABLE>")
    return feedback_text(role, user, _stage_in(variable) or _stage_in(user))


def _textgrad_optimizer(user: str) -> str:
    current = _between(user, "<VARIABLE>", "</VARIABLE>")
    new = improved(current) or current.strip()
    return f"<IMPROVED_VARIABLE>{new}</IMPROVED_VARIABLE>"


_OPTO_VAR = re.compile(r"^\((\w+)\) ([A-Za-z_][\w]*)=(.*)$", re.M)


def _trace_optimizer(user: str) -> str:
    section = ""
    for head in ("#Variables", "#Parameters"):
        section = _between(user, f"\n{head}\n", "\n#Constraints")
        if section:
            break
    suggestion = {}
    for _type, name, value in _OPTO_VAR.findall(section):
        new = improved(value)
        if new is not None:
            suggestion[name] = new
    return json.dumps({
        "reasoning": "The feedback shows wrong sums; the variables are rewritten to make the "
                     "model check its arithmetic and keep the format.",
        "answer": "",
        "suggestion": suggestion,
    })


_INPUT_KEY = re.compile(r"^- `([^`]+)`", re.M)


def _tracegrad_backward(user: str) -> str:
    section = user.split("## Inputs to give feedback on", 1)[-1]
    keys = _INPUT_KEY.findall(section)
    out = {}
    for key in keys:
        block = re.search(rf'<input key="{re.escape(key)}"[^>]*>\n(.*?)\n</input>', user, re.S)
        stage = _stage_in(block.group(1)) if block else None
        if key.endswith("system") or stage:
            out[key] = feedback_text(f"the input `{key}`", user, stage or _stage_in(user))
        else:
            out[key] = feedback_text(f"the input `{key}`", _run_text(user, key), None)
    return json.dumps(out)


def _run_text(user: str, key: str) -> str:
    """The part of a batched backward request that belongs to the run of ``key`` (#i.key)."""
    m = re.match(r"#(\d+)\.", key)
    if not m:
        return user
    return _between(user, f"## Run #{m.group(1)}\n", "\n## ") or user


def _tracegrad_tgd(user: str) -> str:
    current = _between(user, "<current_value>\n", "\n</current_value>")
    new = improved(current) or current
    return f"Applying the feedback.\n<new_value>\n{new}\n</new_value>"


_TG_PARAM = re.compile(r"^### (.+?)\n.*?<value>\n(.*?)\n</value>", re.S | re.M)


def _tracegrad_trace(user: str) -> str:
    section = _between(user, "## Parameters you may change\n", "\n## Feedback on the result")
    values = {}
    for name, value in _TG_PARAM.findall(section):
        new = improved(value)
        if new is not None:
            values[name.strip()] = new
    return json.dumps({
        "reasoning": "The wrong sums trace back to the prompts; they now ask for a checked sum.",
        "values": values,
    })


def _summary(user: str) -> str:
    wrong, right = _outcomes(user)
    lines = [f"- {len(wrong)} item(s): the computed sum is off by one; ask the model to add the "
             "tens and the ones separately and to re-check the sum."]
    if right:
        lines.append(f"- {right} item(s) report a correct answer and ask for no change.")
    return "\n".join(lines)


def reply(body: dict[str, Any]) -> str:
    """The reply to one chat request body."""
    kind = classify(body)
    system, user, _ = split(body)
    if kind == "forward":
        return _forward(system, user)
    if kind == "judge":
        return _judge(system, user)
    if kind == "textgrad.gradient":
        return _textgrad_gradient(user)
    if kind == "textgrad.optimizer":
        return _textgrad_optimizer(user)
    if kind == "trace.optimizer":
        return _trace_optimizer(user)
    if kind == "tracegrad.backward":
        return _tracegrad_backward(user)
    if kind == "tracegrad.tgd":
        return _tracegrad_tgd(user)
    if kind == "tracegrad.trace":
        return _tracegrad_trace(user)
    if kind == "tracegrad.summary":
        return _summary(user)
    return "OK."
