"""How close ``tracegrad estimate`` comes to the run it predicts, on every bundled prompt file.

For each prompt file in ``prompts/`` it runs ``tracegrad estimate`` and then ``tracegrad
optimize`` with the same options against a FakeOpenAIServer on 127.0.0.1, and compares
the predicted calls and tokens with the calls and tokens the run's meter counted. Offline,
no key, a few seconds.

The server plays a SIMULATED task world (:class:`PromptFileWorld`): the task model answers
each example with its expected value (formatted as a model would reply: a label, a number,
a JSON object) or with a plausible wrong one, and is right more often the more rules the
optimizer has added to the template; the feedback model writes a paragraph of critique per
input, the optimizer adds one rule per step. Replies have the lengths real ones have, but
they are simulated: the figures check the estimate's accounting (which calls a run makes,
how long each request is), not a real model's verbosity. The server counts tokens with the
same 4-characters rule as the estimate; a real tokenizer differs by a few percent.

Two scenarios per file:

- ``full``: the task model is never perfect (at most 80% right), so every step has
  failures to learn from and no early stop happens: the point estimate must be within 25%.
- ``early``: the task model becomes perfect after two rules, so the run stops early on a
  perfect validation score; the actual calls must fall in the estimate's range.

    python benchmarks/estimate_accuracy.py [--steps 4] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "prompts"
FILES = ("object_counting", "support_intent", "invoice_extraction")
TOLERANCE = 0.25

_RULES = [
    "Read the whole input once before answering, and do not skip any part of it.",
    "Answer in exactly the format the task asks for, with no words around the answer.",
    "When the input is ambiguous, choose the reading a careful human expert would choose.",
    "Check the answer against the input once more before you reply with it.",
    "Ignore details of the input that do not bear on the question being asked.",
    "Never invent information that the input does not state or clearly imply.",
    "Keep the names, numbers and words of the input exactly as they are written there.",
    "If two answers seem possible, prefer the one the input supports most directly.",
    "Treat each part of the input on its own before combining them into the answer.",
    "Use the same spelling and the same units as the examples of the expected answers.",
    "Do not explain the answer unless the task asks for an explanation.",
    "Make sure the answer is complete: nothing that was asked for may be missing.",
]
_CRITIQUE = ("The output does not match the expected value. The prompt should say more "
             "precisely what the answer must contain and in which format; here the model "
             "{what}. Add an instruction that makes the model read every part of the input "
             "and reply with only the answer, so that examples like this one come out right.")


def _u(*parts: Any) -> float:
    """A deterministic number in [0, 1) from ``parts``: the world has no hidden state."""
    h = hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()
    return int(h[:8], 16) / 2**32


class PromptFileWorld:
    """A SIMULATED task model, feedback model and optimizer for one prompt file's data."""

    def __init__(self, rows: list[dict[str, Any]], inputs: list[str], output: str, *,
                 base: float = 0.45, gain: float = 0.12, cap: float = 0.8) -> None:
        self.rows, self.inputs, self.output = rows, inputs, output
        self.base, self.gain, self.cap = base, gain, cap
        self.labels = sorted({json.dumps(r[output], sort_keys=True) for r in rows})

    def http_reply(self, body: dict[str, Any]) -> str:
        from tracegrad.demo import infer_purpose
        from tracegrad.testing.server import body_text

        messages = body.get("messages") or []
        text = body_text(body)
        purpose = infer_purpose(messages)
        if purpose == "backward":
            return self._feedback(text)
        if purpose == "optimizer":
            if "<current_value>" in text:
                return self._rewrite(text)
            if "## Parameters you may change" in text:
                return self._rewrite_trace(text)
            return self._summary(text)
        return self._answer(text)

    # -- the task model ------------------------------------------------------------------
    def _row(self, text: str) -> dict[str, Any] | None:
        for r in self.rows:
            if all(str(r[k]) in text for k in self.inputs):
                return r
        return None

    def _answer(self, text: str) -> str:
        row = self._row(text)
        if row is None:
            return "I cannot tell from the text."
        rules = sum(1 for rule in _RULES if rule in text)
        p = min(self.cap, self.base + self.gain * rules)
        want = row[self.output]
        # one draw per example: a rule added never makes a right answer wrong
        if _u(json.dumps(row, sort_keys=True)) < p:
            return _say(want)
        return _say(self._wrong(want, row))

    def _wrong(self, want: Any, row: dict[str, Any]) -> Any:
        if isinstance(want, dict):  # one field off, as a model misreading the text
            bad = dict(want)
            key = sorted(bad)[int(_u(row, "k") * len(bad))]
            v = bad[key]
            bad[key] = v + 10 if isinstance(v, int | float) else f"{v} Ltd"
            return bad
        if isinstance(want, str) and want.isdigit():
            return str(int(want) + 1 + int(_u(row, "n") * 2))
        others = [json.loads(x) for x in self.labels if json.loads(x) != want]
        return others[int(_u(row, "l") * len(others))] if others else f"not {want}"

    # -- the feedback model and the optimizer ---------------------------------------------
    def _feedback(self, text: str) -> str:
        section = text.split("## Inputs to give feedback on")[-1]
        keys = re.findall(r"^- `([^`]+)`:", section, re.M)
        got = re.search(r"<output>\n(.*?)\n</output>", text, re.S)
        what = f"replied {got.group(1).strip()[:60]!r}" if got else "gave the wrong answer"
        out = {k: (_CRITIQUE.format(what=what) if ("template" in k or "prompt" in k)
                   else "no change needed") for k in keys}
        return json.dumps(out)

    def _summary(self, text: str) -> str:
        return ("The feedback items agree on two problems. The answers are not always in the "
                "required format, and parts of the input are skipped. The prompt should ask "
                "the model to read every part of the input and to reply with the answer only.")

    def _add_rule(self, template: str, text: str) -> str:
        from tracegrad.demo import _insert_instruction

        todo = [r for r in _RULES if r not in template]
        # which rule depends on the request (its feedback), as a model's choice would
        return _insert_instruction(template, todo[int(_u(text) * len(todo))]) if todo else template

    def _rewrite_trace(self, text: str) -> str:
        from tracegrad.demo import _trace_params

        values = {name: self._add_rule(v, text) for name, v in _trace_params(text).items()
                  if "{{" in v}
        return json.dumps({"reasoning": "The outputs skip parts of the input and add words "
                           "around the answer; one rule addresses the most frequent problem.",
                           "values": values})

    def _rewrite(self, text: str) -> str:
        cur = re.search(r"<current_value>\n(.*?)\n</current_value>", text, re.S)
        template = cur.group(1) if cur else ""
        new = self._add_rule(template, text)
        return ("The feedback says the model skips parts of the input and adds words around "
                "the answer. I add one rule that addresses the most frequent problem and keep "
                f"the rest of the prompt unchanged.\n<new_value>\n{new}\n</new_value>")


def _say(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def _cli(*args: Any) -> dict[str, Any]:
    from typer.testing import CliRunner

    from tracegrad.cli import app

    r = CliRunner().invoke(app, [str(a) for a in args])
    if r.exit_code != 0:
        raise RuntimeError(f"tracegrad {' '.join(map(str, args[:1]))} failed ({r.exit_code}): "
                           f"{r.stderr or r.stdout}")
    return json.loads(r.stdout)


def run_one(name: str, *, steps: int, scenario: str, optimizer: str = "tgd",
            work: Path) -> dict[str, Any]:
    """Estimate, then run, one prompt file; both through the CLI, on the fake server."""
    from tracegrad.promptfile import PromptFile
    from tracegrad.testing import FakeOpenAIServer

    prompt, train = PROMPTS / f"{name}.prompt", PROMPTS / f"{name}.train.jsonl"
    val = PROMPTS / f"{name}.val.jsonl"
    pf = PromptFile.load(prompt)
    rows = [json.loads(ln) for p in (train, val) for ln in p.read_text().splitlines()
            if ln.strip()]
    kw = {"cap": 1.0, "base": 0.6, "gain": 0.2} if scenario == "early" else {}
    world = PromptFileWorld(rows, sorted(pf.fields), pf.output, **kw)
    opts = ["--train", train, "--val", val, "--steps", steps, "--optimizer", optimizer]
    with FakeOpenAIServer(world.http_reply) as server:
        est = _cli("estimate", prompt, *opts, "--base-url", server.url, "--json")
        run = _cli("optimize", prompt, *opts, "--base-url", server.url, "--no-cache", "--json",
                   "--quiet", "--run-dir", work / f"{name}-{scenario}-{optimizer}",
                   "--out", work / f"{name}-{scenario}.prompt")
        served = server.request_count
        # a run that stopped early, against the estimate of the steps it made
        done = max(1, run["steps_done"])
        at = est if done == steps else _cli("estimate", prompt, *opts[:4], "--steps", done,
                                            *opts[6:], "--json")
    u, t = run["usage"], est["total"]
    return {
        "file": name, "scenario": scenario, "optimizer": optimizer, "steps": steps,
        "steps_done": run["steps_done"], "stopped": run["stopped_reason"],
        "est_calls": t["calls"], "calls": u["calls"], "served": served,
        "range_calls": [est["range"]["low"]["calls"], est["range"]["high"]["calls"]],
        "est_tokens": t["prompt_tokens"] + t["completion_tokens"], "tokens": u["total_tokens"],
        "est_out": t["completion_tokens"], "out": u["completion_tokens"],
        "est_calls_at_done": at["total"]["calls"],
        "est_tokens_at_done": at["total"]["prompt_tokens"] + at["total"]["completion_tokens"],
        "range_tokens": [est["range"]["low"]["total_tokens"],
                         est["range"]["high"]["total_tokens"]],
    }


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def table(results: list[dict[str, Any]]) -> str:
    head = ("| file | scenario | steps run | calls: est / actual | tokens: est / actual | "
            "output tokens: est / actual | est for the steps run: calls, tokens | "
            "actual in range |")
    lines = [head, "|---|---|--:|--:|--:|--:|--:|:-:|"]
    for r in results:
        lo, hi = r["range_calls"]
        ok = lo <= r["calls"] <= hi and r["range_tokens"][0] <= r["tokens"] <= r["range_tokens"][1]
        lines.append(
            f"| {r['file']} | {r['scenario']} ({r['stopped']}) | {r['steps_done']}/{r['steps']} | "
            f"{r['est_calls']} / {r['calls']} ({_ratio(r['est_calls'], r['calls']):.2f}x) | "
            f"{r['est_tokens']:,} / {r['tokens']:,} ({_ratio(r['est_tokens'], r['tokens']):.2f}x) | "
            f"{r['est_out']:,} / {r['out']:,} ({_ratio(r['est_out'], r['out']):.2f}x) | "
            f"{_ratio(r['est_calls_at_done'], r['calls']):.2f}x, "
            f"{_ratio(r['est_tokens_at_done'], r['tokens']):.2f}x | "
            f"{'yes' if ok else 'NO'} [{lo}-{hi}] |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--optimizer", default="tgd")
    ap.add_argument("--json", action="store_true", help="one JSON object per run")
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="tracegrad-estimate-") as tmp:
        for name in FILES:
            for scenario in ("full", "early"):
                results.append(run_one(name, steps=args.steps, scenario=scenario,
                                       optimizer=args.optimizer, work=Path(tmp)))
    if args.json:
        for r in results:
            print(json.dumps(r))
    else:
        print("SIMULATED task world on a local fake server (see the module doc)\n")
        print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
