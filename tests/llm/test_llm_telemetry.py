"""The GenAI attributes of one call, built without OpenTelemetry (llm/telemetry.py)."""

from __future__ import annotations

import json

from pydantic import BaseModel

from tracegrad.llm import Completion, OpenAIEngine, Usage
from tracegrad.llm.base import make_request
from tracegrad.llm.telemetry import completion_attributes, engine_facts, request_attributes
from tracegrad.testing import MockLLM, ReplayLLM

SECRET = "sk-test-SECRET-1234567890"


class Answer(BaseModel):
    answer: int


def test_the_server_is_named_by_host_and_port_only():
    engine = OpenAIEngine("m", base_url="https://user:pw@llm.example.com/v1?key=abc",
                          api_key=SECRET, temperature=0.2)
    facts = engine_facts(engine)
    assert (facts["server.address"], facts["server.port"]) == ("llm.example.com", 443)
    assert facts["gen_ai.provider.name"] == "openai"
    attrs = request_attributes(make_request("q", stop="END", top_p=0.9), engine, facts)
    assert "pw" not in json.dumps(attrs) and "key=abc" not in json.dumps(attrs)
    assert attrs["gen_ai.request.temperature"] == 0.2  # the engine's default parameter
    assert attrs["gen_ai.request.top_p"] == 0.9
    assert attrs["gen_ai.request.stop_sequences"] == ["END"]


def test_providers_and_structured_output(tmp_path):
    assert engine_facts(MockLLM())["gen_ai.provider.name"] == "tracegrad.mock"
    replay = ReplayLLM(MockLLM(), tmp_path / "c.jsonl", "record")
    assert engine_facts(replay)["gen_ai.provider.name"] == "tracegrad.mock"  # innermost
    req = make_request("2+2?", response_format=Answer, purpose="judge", sample_id="s1")
    attrs = request_attributes(req, MockLLM(model="judge-model"), engine_facts(MockLLM()))
    assert attrs["gen_ai.output.type"] == "json" and attrs["tracegrad.purpose"] == "judge"
    assert attrs["gen_ai.request.model"] == "judge-model" and attrs["tracegrad.sample_id"] == "s1"


def test_captured_contents_follow_the_message_parts_shape():
    req = make_request("hello", system="be brief")
    attrs = request_attributes(req, MockLLM(), engine_facts(MockLLM()), capture_content=True)
    assert json.loads(attrs["gen_ai.input.messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "hello"}]},
    ]
    out, _ = completion_attributes(Completion("hi", finish_reason="length"), "m", True)
    assert json.loads(out["gen_ai.output.messages"])[0]["finish_reason"] == "length"


def test_a_cache_hit_costs_nothing():
    c = Completion("4", usage=Usage(100, 5), cached=True)
    attrs, usd = completion_attributes(c, "gpt-4o-mini")
    assert usd == 0.0 and attrs["tracegrad.cache_hit"] is True
    assert "gen_ai.usage.input_tokens" not in attrs
    attrs, usd = completion_attributes(Completion("4", usage=Usage(100, 5)), "unknown-local")
    assert usd == 0.0 and attrs["tracegrad.usage.priced"] is False
