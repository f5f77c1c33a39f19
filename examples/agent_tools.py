"""A tool-using agent whose system prompt and tool descriptions are trained (ReAct-style).

A shop assistant answers price questions ("How much do 3 apples and a melon cost, in
euros?") with three Python tools: ``lookup_price`` (a catalogue keyed by singular names),
``calculate`` (arithmetic) and ``convert_currency`` (dollars to EUR or GBP, by code). It is a
``tg.Agent``: every model turn is an LLM node and every tool call a traced node, so a tool
that raises becomes an error result the model reads and feedback on the turn that called
it. The system prompt and the three tool descriptions are trainable Parameters;
``tracegrad.train.optimize`` trains them with TraceOptimizer on 8 questions, gated by 8
others: the metric reads the reply's ``Final answer: <number>`` line, and its verdict is the
feedback.

Runs offline by default on a SCRIPTED MockLLM. Its agent turns react to the text they are
sent: it passes item names as the question writes them ("apples") unless the
``lookup_price`` description asks for singular names, currency names ("euros") unless the
``convert_currency`` description asks for a three-letter code, converts the total only when
the system prompt says to, writes the ``Final answer:`` line only when the system prompt
asks for it, and gives up at the first tool error (a real model might retry). Its
"optimizer" replies with SCRIPTED proposals: first a deliberately bad system prompt (the
gate rejects it), then, for the problem the trace and feedback it is sent show most often,
a fixed sentence added to the parameter that causes it. So the gains come from the scripted
proposals; offline, the point is that the loop -- tool calls run as traced ops, the metric's
feedback, backward, the optimizer's request, parsing its reply, validation gating -- really
runs, and the scores move only because the rewritten text is what the agent is sent. With a
real model:

    python examples/agent_tools.py --model openai:gpt-4o-mini [--base-url URL]
"""

from __future__ import annotations

import argparse
import ast
import json
import operator
import re
import sys
from collections import Counter
from typing import Any

import tracegrad as tg
from tracegrad.llm.base import ConfigurationError, Request
from tracegrad.testing import MockLLM, tool_reply
from tracegrad.testing.mock import request_text

PRICES = {"apple": 0.5, "pear": 0.75, "banana": 0.25, "orange": 0.6, "melon": 3.2,
          "lemon": 0.4, "mango": 1.5, "kiwi": 0.35, "cherry": 0.1, "peach": 0.8}
PLURALS = {"mango": "mangoes", "cherry": "cherries", "peach": "peaches"}
RATES = {"EUR": 0.92, "GBP": 0.79}  # per dollar
CURRENCY_WORDS = {"euros": "EUR", "pounds": "GBP"}
SYSTEM = ("You are a shop assistant. Answer questions about prices with the tools. End "
          "your reply with a line 'Final answer: <number>'.")
TASK = ("An agent answers shop price questions with tools (lookup_price, calculate, "
        "convert_currency). Its reply must end with 'Final answer: <number>', the total in "
        "the currency the question asks for (dollars when it names none), to 2 decimals.")


# -- the tools: real Python, run by the agent loop as traced nodes -------------------------

@tg.tool
def lookup_price(item: str) -> float:
    """Look up the price of an item.

    Args:
        item: the item to look up
    """
    if item not in PRICES:
        raise LookupError(f"no item {item!r} in the catalogue")
    return PRICES[item]


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv}


@tg.tool
def calculate(expression: str) -> float:
    """Evaluate an arithmetic expression.

    Args:
        expression: the expression, e.g. "3 * 0.5 + 2 * 0.75"
    """
    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.left), value(node.right))
        raise ValueError(f"not plain arithmetic: {ast.unparse(node)!r}")

    return round(value(ast.parse(expression, mode="eval").body), 6)


@tg.tool
def convert_currency(amount: float, currency: str) -> float:
    """Convert an amount of dollars into another currency.

    Args:
        amount: the amount in dollars
        currency: the currency to convert to
    """
    if currency not in RATES:
        raise ValueError(f"unknown currency {currency!r}")
    return round(amount * RATES[currency], 2)


TOOLS = [lookup_price, calculate, convert_currency]


def build_agent(engine: Any) -> tuple[tg.Agent, dict[str, tg.Parameter]]:
    """A fresh agent and its trainable texts by name. Each tool is rebuilt from its function,
    so its description starts from the docstring in every run (two runs in one process do
    not share what the first one trained)."""
    system = tg.Parameter(SYSTEM, role="system prompt of the shop assistant agent",
                          name="system_prompt",
                          constraints=["Keep it to at most five sentences."])
    tools = [tg.Tool(t.fn, name=t.name) for t in TOOLS]
    agent = tg.Agent(engine, system=system, tools=tools, max_turns=6)
    return agent, {p.name: p for p in agent.parameters()}


# -- the questions and the metric ------------------------------------------------------------

def _words(item: str, qty: int) -> str:
    if qty == 1:
        return f"{'an' if item[0] in 'aeiou' else 'a'} {item}"
    return f"{qty} {PLURALS.get(item, item + 's')}"


def question(items: list[tuple[str, int]], currency: str = "") -> dict[str, str]:
    """One row: the question and its true answer (computed as the tools compute it)."""
    listing = " and ".join(_words(i, q) for i, q in items)
    verb = "does" if len(items) == 1 and items[0][1] == 1 else "do"
    word = next((w for w, c in CURRENCY_WORDS.items() if c == currency), "")
    total = round(sum(PRICES[i] * q for i, q in items), 6)
    if currency:
        total = round(total * RATES[currency], 2)
    text = f"How much {verb} {listing} cost{', in ' + word if word else ''}?"
    return {"question": text, "answer": f"{total:.2f} {currency or 'USD'}"}


TRAIN = [question(*q) for q in [
    ([("melon", 1)],), ([("apple", 3), ("pear", 2)],), ([("banana", 6)],),
    ([("lemon", 1)], "EUR"), ([("mango", 2), ("kiwi", 1)],), ([("orange", 1), ("pear", 1)],),
    ([("peach", 4)], "GBP"), ([("cherry", 12), ("melon", 1)], "EUR"),
]]
VAL = [question(*q) for q in [
    ([("mango", 1)],), ([("kiwi", 1), ("lemon", 1)],), ([("orange", 5)],),
    ([("apple", 2), ("banana", 3)],), ([("cherry", 20)],), ([("melon", 1)], "GBP"),
    ([("pear", 1), ("peach", 1)], "EUR"), ([("lemon", 4), ("melon", 1)], "GBP"),
]]

_FINAL = re.compile(r"^Final answer:\s*\$?(-?[\d,]*\.?\d+)", re.M | re.I)


def final_answer(prediction: object, expected: str) -> tuple[float, str]:
    """1 when the 'Final answer:' line holds the expected total (within a cent), else 0,
    with what was wrong: that line is all a grader reads."""
    text = str(prediction)
    amount, currency = expected.split()
    m = _FINAL.search(text)
    if not m:
        return 0.0, (f"wrong: the reply has no 'Final answer: <number>' line; the right total "
                     f"is {amount} {currency}. The reply: {text[:200]!r}")
    got = float(m.group(1).replace(",", ""))
    if abs(got - float(amount)) < 0.011:
        return 1.0, f"correct: {amount} {currency}"
    return 0.0, f"wrong: the final answer is {got:.2f} but the right total is {amount} {currency}"


# -- the offline stand-in for a model: agent turns that read what they are sent -------------

def _history(request: Request) -> list[tuple[str, str]]:
    """(tool name, result text) of every tool call so far, in order. Call ids are matched
    in the turn that made them (a model may reuse an id in a later turn)."""
    names: dict[str, str] = {}
    done = []
    for m in request.messages:
        if m["role"] == "assistant":
            names = {c["id"]: c["function"]["name"] for c in m.get("tool_calls") or []}
        elif m["role"] == "tool":
            done.append((names.get(m.get("tool_call_id"), "?"), str(m["content"])))
    return done


def _singular(word: str) -> str:
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("oes", "ches")):
        return word[:-2]
    return word[:-1] if word.endswith("s") else word


def agent_turn(request: Request) -> Any:
    """One ReAct turn of the SCRIPTED agent, decided by the system prompt and the tool
    descriptions in ``request`` (see the module docstring for its habits)."""
    system = next(m["content"] for m in request.messages if m["role"] == "system")
    asked = next(m["content"] for m in request.messages if m["role"] == "user")
    said = {t["function"]["name"]: t["function"]["description"].lower()
            for t in request.tools or []}
    items = [(1 if q in ("a", "an") else int(q), w)
             for q, w in re.findall(r"\b(\d+|an?) ([a-z]+)", asked.split("cost")[0])]
    word = next((w for w in CURRENCY_WORDS if f"in {w}" in asked), "")
    done = _history(request)
    errors = [r for _, r in done if r.startswith("error:")]
    if errors:
        return f"Sorry, I could not work this out: the tool said {errors[0][len('error: '):]}"
    results = {name: [r for n, r in done if n == name] for name in said}
    if not results["lookup_price"]:
        singular = "singular" in said["lookup_price"]
        return tool_reply(*[("lookup_price", {"item": _singular(w) if singular else w})
                            for _, w in items], text="Thought: I need the price of each item.")
    if not results["calculate"]:
        prices = [float(r) for r in results["lookup_price"]]
        expression = " + ".join(f"{q} * {p:g}" for (q, _), p in zip(items, prices, strict=True))
        return tool_reply(("calculate", {"expression": expression}),
                          text="Thought: now the total of quantity times price.")
    total, unit = float(results["calculate"][-1]), "dollars"
    if word and "convert" in system.lower() and not results["convert_currency"]:
        code = CURRENCY_WORDS[word] if "three-letter" in said["convert_currency"] else word
        return tool_reply(("convert_currency", {"amount": total, "currency": code}),
                          text=f"Thought: the question wants {word}.")
    if results["convert_currency"]:
        total, unit = float(results["convert_currency"][-1]), word
    reply = f"That comes to {total:.2f} {unit}."
    if "final answer:" in system.lower():
        reply += f"\nFinal answer: {total:.2f}"
    return reply


# -- ... and an optimizer that answers the symptoms it is shown with fixed proposals ---------

BAD_SYSTEM = ("You are a friendly shop assistant. Chat warmly with the customer about our "
              "prices, and use the tools when you need them.")
FIXES = [  # (symptom in the request, parameter, sentence added to it, why)
    (r"no item '[a-z]+' in the catalogue", "lookup_price.description",
     "Prices are per single item: pass the item's singular name in lowercase ('apple', "
     "not 'apples').", "lookup_price was called with plural names the catalogue lacks"),
    (r"unknown currency '", "convert_currency.description",
     "Give the currency as its three-letter code: EUR for euros, GBP for pounds.",
     "convert_currency was called with a currency name instead of a code"),
    (r"final answer is [\d.]+ but the right total is [\d.]+ (?:EUR|GBP)", "system_prompt",
     "When the question asks for euros or pounds, convert the dollar total with "
     "convert_currency before answering.", "totals asked in euros or pounds were left in dollars"),
]


def optimizer_turn(text: str, first: bool) -> str:
    """The SCRIPTED optimizer: the bad rewrite first; then, of the symptoms in ``text`` whose
    fix is not in its parameter yet, the most frequent one's fix."""
    if first:
        return json.dumps({"reasoning": "SCRIPTED (deliberately bad, to show the gate): a "
                           "friendlier tone", "values": {"system_prompt": BAD_SYSTEM}})
    current = dict(re.findall(r"^### (\S+)\n.*?<value>\n(.*?)\n</value>", text, re.S | re.M))
    seen = Counter()
    for pattern, name, sentence, why in FIXES:
        if name in current and sentence not in current[name]:
            seen[(name, sentence, why)] = len(re.findall(pattern, text))
    best = [(fix, n) for fix, n in seen.most_common(1) if n]
    if not best:
        return json.dumps({"reasoning": "SCRIPTED: no symptom left that a fix answers",
                           "values": {}})
    (name, sentence, why), n = best[0]
    value = f"{current[name].rstrip()} {sentence}"
    return json.dumps({"reasoning": f"SCRIPTED: {why} ({n} times in the trace and feedback)",
                       "values": {name: value}})


def mock_llm() -> MockLLM:
    """Agent turns (purpose "forward") and optimizer requests, each answered from the
    request's own text."""
    asked = []

    def reply(request: Request) -> Any:
        if request.purpose == "forward":
            return agent_turn(request)
        if request.purpose != "optimizer":
            raise AssertionError(f"unexpected request: {request.purpose}")
        asked.append(request)
        return optimizer_turn(request_text(request), first=len(asked) == 1)

    return MockLLM(reply, model="scripted-shop")


# -- the run -----------------------------------------------------------------------------------

def train(engine: Any, steps: int, run_dir: str | None) -> dict[str, Any]:
    """``tracegrad.train.optimize`` on the agent's texts; a JSON-able summary of the run."""
    from tracegrad.train import optimize

    agent, params = build_agent(engine)
    initial = {name: p.value for name, p in params.items()}
    # the trainer calls the program with a row's inputs as keywords: question=...
    result = optimize(lambda question: agent(question), TRAIN, VAL, metric=final_answer,
                      optimizer="trace", parameters=params, task=TASK, steps=steps,
                      batch_size=4, engine=engine, optimizer_engine=engine,
                      run_dir=run_dir or False, progress=False)
    return {
        "before": result.baseline_score, "after": result.best_score,
        "stopped": result.stopped_reason, "run_dir": str(result.run_dir or "") or None,
        "steps": [{"step": r["step"], "result": r["result"], "reason": r["reason"],
                   "val_score": r["val_score"], "proposed": r["proposed"]}
                  for r in result.history],
        "initial": initial, "optimized": dict(result.best_state),
        "changed": [n for n in initial if result.best_state[n] != initial[n]],
    }


def report(run: dict[str, Any]) -> None:
    print(f"before: val score={run['before']:.3f} ({len(VAL)} questions, the initial "
          "system prompt and tool descriptions)")
    for s in run["steps"]:
        print(f"step {s['step']}: {s['result']} -- {s['reason']}")
        for name, text in s["proposed"].items():
            print(f"    proposed {name}: {text}")
    print(f"after: val score={run['after']:.3f} (best; before: {run['before']:.3f}; "
          f"stopped: {run['stopped']})")
    print("optimized texts (* changed):")
    for name, text in run["optimized"].items():
        print(f"{'*' if name in run['changed'] else ' '} {name}: {text}")
    if run["run_dir"]:
        print(f"run dir: {run['run_dir']}")


def engine_for(model: str | None, base_url: str | None) -> Any:
    """The mock, or ``tg.LLM`` for ``openai:<model>``; ValueError says what is wrong."""
    if not model:
        return mock_llm()
    provider, _, name = model.partition(":")
    if provider != "openai" or not name:
        raise ValueError(f"--model must be openai:<model>, e.g. openai:gpt-4o-mini (got {model!r})")
    from tracegrad.llm import LLM

    return LLM(model, base_url=base_url)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a real model, e.g. openai:gpt-4o-mini (default: offline mock)")
    ap.add_argument("--base-url", help="OpenAI-compatible server URL")
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps at most")
    ap.add_argument("--run-dir", help="keep the run (resumable, with a report) in this directory")
    ap.add_argument("--json", action="store_true", help="print the run as one JSON object")
    args = ap.parse_args(argv)
    try:
        if args.steps < 1:
            raise ValueError(f"--steps must be at least 1 (got {args.steps})")
        engine = engine_for(args.model, args.base_url)
    except (ValueError, ConfigurationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    scripted = not args.model
    if scripted and not args.json:
        print("(offline: SCRIPTED MockLLM -- the agent's turns follow the prompt and tool "
              "descriptions they are sent, the optimizer's proposals are SCRIPTED; the tools, "
              "the metric and the gate are real; pass --model to use a real model)")
    try:
        run = train(engine, args.steps, args.run_dir)
    except (tg.LLMError, RuntimeError) as e:  # an unreachable server, a refused key, ...
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"model": args.model or "SCRIPTED MockLLM", "scripted": scripted, **run}))
    else:
        report(run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
