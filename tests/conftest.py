"""Shared fixtures: scripted engines that behave like a backward model and a judge."""

from __future__ import annotations

import json
import re

import pytest

import tracegrad as tg
from tracegrad.testing import MockLLM

pytest_plugins = ["tracegrad_pytest"]  # also auto-registered once installed: listing it is harmless

_KEYS = re.compile(r"^- `([^`]+)`", re.M)


def feedback_keys(request) -> list[str]:
    """The input keys a textual-backward request asks feedback for."""
    from tracegrad.llm.base import content_to_text  # content may be parts (images attached)

    text = content_to_text(request.messages[-1]["content"])
    return _KEYS.findall(text.split("## Inputs to give feedback on")[-1])


def backward_reply(request) -> str:
    """A well-behaved backward model: one feedback string per requested key."""
    return json.dumps({k: f"feedback for {k}" for k in feedback_keys(request)})


@pytest.fixture
def backward_engine():
    """A MockLLM that answers backward requests with JSON and judge requests with a critique."""
    engine = MockLLM(
        {
            r"Evaluation instruction": "The answer is wrong: there are 3 fruits, not 7.",
            r"Inputs to give feedback on": backward_reply,
        },
        default=None,
    )
    with tg.backward_llm(engine):
        yield engine


def pytest_report_header(config):
    from tracegrad.sandbox_bwrap import os_sandbox_available

    return [f"tracegrad OS sandbox (bubblewrap): {'works' if os_sandbox_available() else 'NOT available'}"]
