"""examples/agent_tools.py: a tg.Agent whose system prompt and tool descriptions are trained.

The run's printed scores are recomputed here by running the scripted agent on the
validation questions with the texts the run reports, so a number the run did not earn
fails; and the scripted agent is checked to act on the text it is sent, so the score
change is caused by the optimized text and not by the script.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "agent_tools.py"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI")}
    return {**env, **extra}


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True, text=True,
                          timeout=100, cwd=EXAMPLE.parents[1], env=_env(**env))


@pytest.fixture(scope="module")
def ex():
    spec = importlib.util.spec_from_file_location("_tg_example_agent_tools", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def text_run() -> subprocess.CompletedProcess[str]:
    return _run()


@pytest.fixture(scope="module")
def json_run() -> dict:
    r = _run("--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def val_score(ex, texts: dict[str, str]) -> float:
    """The mean validation score of a fresh scripted agent sent ``texts``."""
    agent, params = ex.build_agent(ex.mock_llm())
    for name, text in texts.items():
        params[name].value = text
    scores = [ex.final_answer(agent(row["question"]).value, row["answer"])[0] for row in ex.VAL]
    return sum(scores) / len(scores)


def test_runs_offline_and_improves_the_validation_score(text_run):
    r = text_run
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SCRIPTED" in r.stdout and r.stderr == ""
    before = float(re.search(r"^before: val score=([\d.]+)", r.stdout, re.M).group(1))
    after = float(re.search(r"^after: val score=([\d.]+)", r.stdout, re.M).group(1))
    assert (before, after) == (0.25, 1.0), r.stdout
    # the optimized texts are printed, the changed ones marked
    assert re.search(r"^\* lookup_price\.description: .*singular", r.stdout, re.M), r.stdout
    assert re.search(r"^  calculate\.description: Evaluate an arithmetic expression\.$",
                     r.stdout, re.M), r.stdout


def test_printed_scores_are_the_agents_real_scores(ex, json_run):
    run = json_run
    assert run["scripted"] is True and run["after"] > run["before"] + 0.5
    assert val_score(ex, run["initial"]) == run["before"]
    assert val_score(ex, run["optimized"]) == run["after"]


def test_the_optimized_texts_change_the_system_prompt_and_tool_descriptions(ex, json_run):
    run = json_run
    assert run["initial"]["system_prompt"] == ex.SYSTEM
    assert run["initial"]["lookup_price.description"] == "Look up the price of an item."
    assert sorted(run["changed"]) == ["convert_currency.description",
                                      "lookup_price.description", "system_prompt"]
    for name in run["changed"]:
        assert run["optimized"][name] != run["initial"][name]
        assert run["optimized"][name].startswith(run["initial"][name])  # a sentence was added
    assert "singular" in run["optimized"]["lookup_price.description"]
    assert "three-letter code" in run["optimized"]["convert_currency.description"]
    assert "convert" in run["optimized"]["system_prompt"]


def test_the_gate_reverted_the_bad_rewrite(ex, json_run):
    first = json_run["steps"][0]
    assert first["result"] == "reverted" and first["proposed"] == {"system_prompt": ex.BAD_SYSTEM}
    assert first["val_score"] < json_run["before"]
    assert ex.BAD_SYSTEM not in json_run["optimized"].values()
    assert [s["result"] for s in json_run["steps"]].count("accepted") == 3


def test_the_scripted_agent_acts_on_the_text_it_is_sent(ex, json_run):
    """Each fix moves the score only when it is in the text; dropping the answer-format
    sentence from the optimized prompt loses every point."""
    initial, best = json_run["initial"], json_run["optimized"]
    assert val_score(ex, initial) == 0.25  # the two questions with singular names, no currency
    lookup = {**initial, "lookup_price.description": best["lookup_price.description"]}
    assert val_score(ex, lookup) == 0.625
    codes = {**lookup, "convert_currency.description": best["convert_currency.description"]}
    assert val_score(ex, codes) == 0.625  # not converted: the system prompt does not ask
    assert val_score(ex, {**codes, "system_prompt": best["system_prompt"]}) == 1.0
    no_format = best["system_prompt"].replace("End your reply with a line 'Final answer: "
                                              "<number>'. ", "")
    assert no_format != best["system_prompt"]
    assert val_score(ex, {**best, "system_prompt": no_format}) == 0.0


def test_requests_carry_the_current_texts(ex):
    """What the agent's model is sent is the Parameters' current values."""
    from tracegrad.testing import MockLLM

    sent = []
    agent, params = ex.build_agent(MockLLM(lambda req: sent.append(req) or ex.agent_turn(req)))
    params["lookup_price.description"].value = "Pass singular names."
    params["system_prompt"].value = "Be a shop. Final answer: <number>."
    answer = agent("How much do 3 apples cost?")
    assert answer.value.endswith("Final answer: 1.50")
    assert sent and all(r.messages[0] == {"role": "system", "content": params["system_prompt"].value}
                        for r in sent)
    described = {t["function"]["name"]: t["function"]["description"] for t in sent[0].tools}
    assert described["lookup_price"] == "Pass singular names."


def test_tools_run_as_traced_nodes_and_a_failing_tool_is_feedback(ex):
    import tracegrad as tg

    agent, _ = ex.build_agent(ex.mock_llm())
    answer = agent("How much do 3 apples cost?")
    listing = tg.trace_listing(answer)
    assert 'lookup_price(call=agent1, arguments={"item": "apples"})' in listing
    assert "raised: \"LookupError: no item 'apples' in the catalogue\"" in listing
    assert ex.final_answer(answer.value, "1.50 USD")[0] == 0.0
    assert ex.calculate("3 * 0.5 + 2 * 0.75") == 3.0
    with pytest.raises(ValueError, match="not plain arithmetic"):
        ex.calculate("__import__('os').getcwd()")
    with pytest.raises(LookupError):
        ex.lookup_price("apples")
    assert ex.convert_currency(10.0, "EUR") == 9.2


def test_the_metric_reads_only_the_final_answer_line(ex):
    assert ex.final_answer("That is 1.50.\nFinal answer: 1.50", "1.50 USD") == (
        1.0, "correct: 1.50 USD")
    score, why = ex.final_answer("That comes to 1.50 dollars.", "1.50 USD")
    assert score == 0.0 and "no 'Final answer: <number>' line" in why
    score, why = ex.final_answer("Final answer: 3.20", "2.53 GBP")
    assert score == 0.0 and "final answer is 3.20 but the right total is 2.53 GBP" in why


@pytest.mark.parametrize("args", [["--model", "foo:bar"], ["--model", "mock"],
                                  ["--model", "openai:"], ["--steps", "0"],
                                  ["--model", "openai:gpt-4o-mini"]])
def test_bad_input_is_one_error_line_and_exit_2(args):
    r = _run(*args, TRACEGRAD_NO_CACHE="1")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_with_model_talks_to_an_openai_compatible_server(ex, tmp_path):
    """--model/--base-url: the real openai client over HTTP; the server plays the same
    scripted agent and optimizer from each request body (tool calls on the wire)."""
    from tracegrad.llm.base import Request
    from tracegrad.testing import FakeOpenAIServer
    from tracegrad.testing.server import body_text

    optimizer_calls = []

    def world(body: dict) -> object:
        if body.get("tools"):
            return ex.agent_turn(Request(messages=body["messages"], tools=body["tools"]))
        optimizer_calls.append(body)
        return ex.optimizer_turn(body_text(body), first=len(optimizer_calls) == 1)

    with FakeOpenAIServer(world) as server:
        r = _run("--model", "openai:fake-model", "--base-url", server.url, "--json",
                 TRACEGRAD_NO_CACHE="1", TRACEGRAD_CACHE_DIR=str(tmp_path))
        bodies = server.requests
    assert r.returncode == 0, r.stdout + r.stderr
    run = json.loads(r.stdout)
    assert run["scripted"] is False and "SCRIPTED" not in run["model"]
    assert (run["before"], run["after"]) == (0.25, 1.0)
    assert any(m["role"] == "tool" and "no item 'apples'" in m["content"]
               for b in bodies for m in b["messages"])
    sent = {t["function"]["description"] for b in bodies for t in b.get("tools", [])}
    assert run["optimized"]["lookup_price.description"] in sent
