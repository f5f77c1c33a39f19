"""Smoke test of the benchmark harness (benchmarks/) at tiny sizes.

It checks that the server recognises every request of every framework and that each
tracegrad mode applies the improved values the server hands out -- so a change to a
prompt file or a reply format that would silently break the benchmark fails here. It
measures nothing: performance lives in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import replies  # noqa: E402
from server import BenchServer, summarize  # noqa: E402


def body(system: str, user: str) -> dict:
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}


def test_forward_and_judge_replies_are_deterministic_and_parsable():
    q, a = common.questions(1)[0]
    first = replies.reply(body(common.W1_PROMPT, q))
    assert replies.classify(body(common.W1_PROMPT, q)) == "forward"
    assert first == replies.reply(body(common.W1_PROMPT, q))
    assert common.last_int(first) in (a, a + 1)
    assert replies.reply(body(common.W2_PROMPTS["extract"], q)).startswith("Numbers: ")
    assert replies.classify(body(common.W3_JUDGE, common.W3_ANSWER)) == "judge"
    assert "32" in replies.reply(body(common.W3_JUDGE, common.W3_ANSWER))


def test_textgrad_and_trace_formats():
    """The reply formats TextGrad's TGD and Trace's OptoPrime parse (texts as they send them)."""
    tgd_system = ("You are part of an optimization system that improves text (i.e., variable). "
                  "You will be asked to ... <IMPROVED_VARIABLE> {improved variable} </IMPROVED_VARIABLE>")
    user = f"The variable is the text within the following span: <VARIABLE> {common.W1_PROMPT} </VARIABLE>"
    out = replies.reply(body(tgd_system, user))
    assert replies.classify(body(tgd_system, user)) == "textgrad.optimizer"
    assert out.split("<IMPROVED_VARIABLE>")[1].split("</IMPROVED_VARIABLE>")[0] == common.IMPROVED["qa"]

    opto_system = "...\nOutput_format: Your output should be in the following json format, satisfying"
    opto_user = (f"#Variables\n(str) str0={common.W2_PROMPTS['solve']}\n(str) str1={common.W2_PROMPTS['format']}"
                 "\n\n#Constraints\n\n#Inputs\n")
    data = json.loads(replies.reply(body(opto_system, "\n" + opto_user)))
    assert data["suggestion"] == {"str0": common.IMPROVED["solve"], "str1": common.IMPROVED["format"]}


@pytest.mark.parametrize("mode", ["textual", "batched", "trace"])
def test_tracegrad_runner_end_to_end(tmp_path, mode):
    out = tmp_path / "result.json"
    with BenchServer(0.0) as server:
        subprocess.run(
            [sys.executable, str(BENCH / "run_tracegrad.py"), "--url", server.url, "--mode", mode,
             "--steps", "1", "--batch1", "3", "--batch2", "2", "--iterations", "2", "--out", str(out)],
            check=True, timeout=120, env={**os.environ, "TRACEGRAD_NO_CACHE": "1"},
        )
        result = json.loads(out.read_text())
        for w, res in result["workloads"].items():
            assert res["problems"] == [], (w, res["problems"])
            for st in res["steps"]:
                s = summarize(server.entries(st["t0"], st["t1"]))
                assert s["unknown"] == 0 and s["repairs"] == 0, (w, s)
                assert s["calls"] > 0
        server.verify()
    w1 = result["workloads"]["w1"]["steps"][0]
    assert w1["wall_s"] > 0
