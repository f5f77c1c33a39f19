"""A reply cut at its limit, or empty, is never used silently (issue 12, section 6).

The engine side: a Completion says what is wrong with it (``problem``), the call log
records it next to ``finish_reason``, and the meter counts such replies by purpose, so a
trainer, an optimizer or eval's summary can refuse or report them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracegrad.llm import LLM
from tracegrad.llm.base import Completion
from tracegrad.testing import FakeOpenAIServer

from .reliability_harness import SECRET


@pytest.mark.parametrize(
    ("fault", "finish_reason", "problem"),
    [("length", "length", "length"), ("empty", "stop", "empty"),
     ("whitespace", "stop", "empty"), (None, "stop", None)],
)
def test_cut_and_empty_replies_are_flagged_logged_and_counted(
    tmp_path: Path, fault: str | None, finish_reason: str, problem: str | None
) -> None:
    log = tmp_path / "calls.jsonl"
    with FakeOpenAIServer(default="a reply long enough to be cut in half") as server:
        llm = LLM("openai:gpt-4o-mini", base_url=server.url, api_key=SECRET, cache=False,
                  call_log=log, max_retries=0)
        if fault is not None:
            server.inject(fault)
        c = llm.chat("rewrite the prompt", purpose="optimizer")
    assert (c.finish_reason, c.problem) == (finish_reason, problem)
    (entry,) = [json.loads(x) for x in log.read_text().splitlines()]
    assert entry["response"]["finish_reason"] == finish_reason
    assert entry["response"]["problem"] == problem
    assert entry["response"]["completion_limit"] == 2048  # the optimizer's default limit
    tally = llm.snapshot()["by_purpose"]["optimizer"]
    assert tally["cut_replies"] == int(problem == "length")
    assert tally["empty_replies"] == int(problem == "empty")


def test_a_parsed_value_is_not_an_empty_reply() -> None:
    assert Completion(text="", parsed={"answer": 1}).problem is None
    assert Completion(text="x", finish_reason="content_filter").problem == "content_filter"
