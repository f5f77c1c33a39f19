"""OpenAIEngine through the real openai client against FakeOpenAIServer."""

from __future__ import annotations

import asyncio
import base64
import json
import socket

import pytest
from pydantic import BaseModel

from tracegrad.llm import (
    LLM,
    Cache,
    ConfigurationError,
    ConnectionFailed,
    Image,
    Limits,
    LLMError,
    Meter,
    OpenAIEngine,
    Request,
    RetryableError,
    StructuredOutputError,
    complete_structured,
    find_engine,
)
from tracegrad.llm.base import make_content, make_request
from tracegrad.llm.factory import parse_spec
from tracegrad.testing import FakeOpenAIServer, MockLLM

SECRET = "sk-test-SECRET-1234567890"


class Answer(BaseModel):
    answer: int
    reason: str = ""


def user(text: str, **kw) -> Request:
    return make_request(text, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- plain calls ---------------------------------------------------------------


def test_reply_usage_and_auth_come_from_the_server(server, engine):
    server.add_replies("four")
    c = engine.complete(user("How many legs has a dog?"))
    assert c.text == "four"
    assert c.finish_reason == "stop"
    assert c.model == "gpt-4o-mini"
    reported = server.responses[0]["usage"]
    assert (c.usage.prompt_tokens, c.usage.completion_tokens) == (
        reported["prompt_tokens"],
        reported["completion_tokens"],
    )
    assert not c.usage.estimated
    body = server.requests[0]
    assert body["messages"] == [{"role": "user", "content": "How many legs has a dog?"}]
    assert body["_authorized"] is True
    assert "authorization" not in body["_headers"]


def test_sampling_params_pass_through_and_requests_override_defaults(server):
    eng = OpenAIEngine(
        "gpt-4o-mini",
        base_url=server.url,
        api_key=SECRET,
        temperature=0.3,
        max_tokens=50,
        top_p=0.9,
        repetition_penalty=1.1,
    )
    eng.complete(user("hi", temperature=0.0, seed=7, stop=["\n"], top_k=5))
    body = server.requests[0]
    assert body["temperature"] == 0.0  # request wins over the engine default
    assert body["max_tokens"] == 50
    assert body["top_p"] == 0.9
    assert body["seed"] == 7
    assert body["stop"] == ["\n"]
    # parameters the SDK does not know are still sent, not dropped
    assert body["repetition_penalty"] == 1.1
    assert body["top_k"] == 5


def test_reasoning_models_get_max_completion_tokens(server):
    eng = OpenAIEngine("o4-mini", base_url=server.url, api_key=SECRET, max_tokens=64)
    eng.complete(user("hi"))
    body = server.requests[0]
    assert body["max_completion_tokens"] == 64
    assert "max_tokens" not in body


def test_usage_is_estimated_when_server_reports_none():
    with FakeOpenAIServer(report_usage=False) as s:
        eng = OpenAIEngine("local", base_url=s.url)
        c = eng.complete(user("x" * 40))
    assert c.usage.estimated
    assert c.usage.prompt_tokens > 0 and c.usage.completion_tokens > 0


def test_async_calls_work_across_event_loops(server, engine):
    server.add_replies("a", "b")
    first = asyncio.run(engine.acomplete(user("one")))
    second = asyncio.run(engine.acomplete(user("two")))  # a new loop needs its own client
    assert (first.text, second.text) == ("a", "b")
    assert server.requests[0]["_headers"]["x-stainless-async"] != "false"


def test_content_faults_come_back_as_replies(server, engine):
    server.add_replies("a rather long reply text")
    server.inject("length")
    c = engine.complete(user("q"))
    assert c.finish_reason == "length"
    assert c.text == "a rather lon"
    server.inject("empty")
    assert engine.complete(user("q")).text == ""
    server.inject("whitespace")
    assert engine.complete(user("q")).text.strip() == ""
    server.inject("huge")
    assert len(engine.complete(user("q")).text) == 1_000_000


# -- configuration -----------------------------------------------------------------


def test_no_key_and_no_base_url_names_the_fix():
    with pytest.raises(ConfigurationError) as ei:
        OpenAIEngine("gpt-4o-mini")
    msg = str(ei.value)
    assert "OPENAI_API_KEY" in msg and "base_url" in msg and "--base-url" in msg
    with pytest.raises(ConfigurationError):
        LLM("openai:gpt-4o-mini")


def test_key_and_base_url_from_environment(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    assert OpenAIEngine("gpt-4o-mini").complete(user("hi")).text == "fake reply"
    assert server.requests[0]["_authorized"]


def test_local_server_needs_no_key(server):
    eng = OpenAIEngine("llama3.1:8b", base_url=server.url.replace("127.0.0.1", "localhost"))
    assert eng.complete(user("hi")).text == "fake reply"
    assert server.requests[0]["model"] == "llama3.1:8b"
    assert eng.secret_values() == []


def test_unreachable_server_raises_connection_failed_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    eng = OpenAIEngine("gpt-4o-mini", base_url=url, api_key=SECRET)
    with pytest.raises(ConnectionFailed) as ei:
        eng.complete(user("hi"))
    assert url in str(ei.value)
    assert SECRET not in str(ei.value)
    # through the factory the retries run out and the class is kept
    llm = LLM(
        "gpt-4o-mini", base_url=url, api_key=SECRET, cache=False, max_retries=1, backoff_base=0.001
    )
    with pytest.raises(ConnectionFailed) as ei:
        llm.complete(user("hi"))
    assert "gave up after 2 attempts" in str(ei.value)
    assert url in str(ei.value)


def test_url_credentials_are_not_shown(server):
    url = server.url.replace("http://", "http://bob:hunter2@")
    eng = OpenAIEngine("m", base_url=url, api_key=SECRET)
    assert "hunter2" not in repr(eng) and SECRET not in repr(eng)


def test_every_credential_of_the_engine_is_known_to_every_writer(server):
    """The key given as api_key= only, the base URL's password and a secret-named header:
    scrubbed from text written by code that never saw the engine (issue 12)."""
    from tracegrad.redaction import scrub_text

    url = server.url.replace("http://", "http://bob:pw-9f8e7d6c5b@")
    eng = OpenAIEngine("m", base_url=url, api_key="key-only-in-code-123456",
                       default_headers={"api-key": "azure-4a5b6c7d8e", "X-Trace": "visible-1"})
    assert set(eng.secret_values()) == {"key-only-in-code-123456", "pw-9f8e7d6c5b",
                                        "azure-4a5b6c7d8e"}
    text = scrub_text("key-only-in-code-123456 pw-9f8e7d6c5b azure-4a5b6c7d8e visible-1")
    assert text == "[REDACTED] [REDACTED] [REDACTED] visible-1"


def test_a_placeholder_key_of_a_local_server_is_not_a_secret(server):
    """'not-needed' is what llama.cpp or vLLM take: scrubbing it would blank model names."""
    from tracegrad.redaction import collect_secrets, scrub_text

    eng = OpenAIEngine("not-needed-model", base_url=server.url, api_key="not-needed")
    assert eng.secret_values() == [] and "not-needed" not in collect_secrets(eng)
    assert scrub_text("model not-needed-model") == "model not-needed-model"


# -- error mapping -------------------------------------------------------------------


def test_rate_limit_maps_to_retryable_with_retry_after(server, engine):
    server.inject("429", retry_after=2.5)
    with pytest.raises(RetryableError) as ei:
        engine.complete(user("hi"))
    assert ei.value.status == 429
    assert ei.value.retry_after == 2.5
    server.inject("429", retry_after=None)
    with pytest.raises(RetryableError) as ei:
        engine.complete(user("hi"))
    assert ei.value.retry_after is None


@pytest.mark.parametrize("fault,status", [("500", 500), ("502", 502), ("503", 503)])
def test_server_errors_are_retryable(server, engine, fault, status):
    server.inject(fault)
    with pytest.raises(RetryableError) as ei:
        engine.complete(user("hi"))
    assert ei.value.status == status


@pytest.mark.parametrize("fault", ["drop", "malformed"])
def test_broken_responses_are_retryable(server, engine, fault):
    server.inject(fault)
    with pytest.raises(RetryableError):
        engine.complete(user("hi"))
    assert engine.complete(user("hi")).text == "fake reply"  # the next request is fine


def test_timeout_is_retryable(server):
    eng = OpenAIEngine("m", base_url=server.url, api_key=SECRET, timeout=0.2)
    server.inject("hang", seconds=5)
    with pytest.raises(RetryableError) as ei:
        eng.complete(user("hi"))
    assert "timed out" in str(ei.value)


def test_other_client_errors_are_not_retryable(server):
    eng = OpenAIEngine("m", base_url=server.url + "/nowhere", api_key=SECRET)
    with pytest.raises(LLMError) as ei:
        eng.complete(user("hi"))
    assert not isinstance(ei.value, RetryableError)
    assert "404" in str(ei.value)


def test_no_error_message_contains_the_key(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    eng = OpenAIEngine("m", base_url=server.url, timeout=0.2)
    messages = []
    for fault in ("429", "500", "drop", "malformed", "hang"):
        server.inject(fault, seconds=5)
        with pytest.raises(LLMError) as ei:
            eng.complete(user("hi"))
        messages.append(f"{ei.value!s} {ei.value!r}")
    bad = OpenAIEngine("m", base_url=server.url + "/x")
    with pytest.raises(LLMError) as ei:
        bad.complete(user("hi"))
    messages.append(str(ei.value))
    assert len(messages) == 6
    assert all(SECRET not in m for m in messages)


# -- structured output -----------------------------------------------------------------


def test_json_schema_is_requested_natively(server, engine):
    server.add_replies('{"answer": 4, "reason": "2+2"}')
    c = engine.complete(user("2+2?", response_format=Answer))
    assert c.parsed == Answer(answer=4, reason="2+2")
    fmt = server.requests[0]["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Answer"
    assert fmt["json_schema"]["schema"]["properties"]["answer"]["type"] == "integer"
    assert engine.json_schema_supported is True


@pytest.mark.parametrize("how", ["unsupported", "fault"])
def test_rejected_json_schema_falls_back_to_text_and_is_remembered(how):
    replies = ['{"answer": 4}', '```json\n{"answer": 5}\n```']
    with FakeOpenAIServer(replies, json_schema_supported=how == "fault") as s:
        if how == "fault":
            s.inject("400-json-schema")
        eng = OpenAIEngine("m", base_url=s.url)
        c = eng.complete(user("2+2?", response_format=Answer))
        assert c.parsed == Answer(answer=4)
        reqs = s.requests
        assert len(reqs) == 2
        assert reqs[0]["response_format"]["type"] == "json_schema"
        assert "response_format" not in reqs[1]
        assert '"answer"' in reqs[1]["messages"][-1]["content"]
        assert reqs[1]["messages"][-1]["content"].startswith("2+2?")
        assert eng.json_schema_supported is False
        c2 = eng.complete(user("3+2?", response_format=Answer))
        assert c2.parsed == Answer(answer=5)
        assert s.request_count == 3  # remembered: no second json_schema attempt


def test_engine_does_not_repair_by_itself(server, engine):
    server.add_replies("I think it is four")
    c = engine.complete(user("2+2?", response_format=Answer))
    assert c.parsed is None
    assert server.request_count == 1


def test_malformed_structured_reply_is_repaired_once(server, make_llm):
    server.add_replies("four, obviously", '{"answer": 4}')
    value, c = complete_structured(make_llm(), user("2+2?"), Answer)
    assert value == Answer(answer=4)
    assert server.request_count == 2
    repair = server.requests[1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": "four, obviously"}
    assert "could not be used" in repair[-1]["content"]


def test_twice_malformed_structured_reply_raises(server, make_llm):
    server.add_replies("four", '{"answer": "four"}', '{"answer": 4}')
    with pytest.raises(StructuredOutputError) as ei:
        complete_structured(make_llm(), user("2+2?"), Answer)
    assert ei.value.raw == '{"answer": "four"}'
    assert server.request_count == 2


# -- images ------------------------------------------------------------------------------


def test_images_reach_the_server_as_data_urls(server, engine):
    png = b"\x89PNG\r\n\x1a\nfake-image-bytes"
    msg = {"role": "user", "content": make_content(["What is in this picture?", Image(png)])}
    engine.complete(Request(messages=[msg]))
    parts = server.requests[0]["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": "What is in this picture?"}
    url = parts[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == png


# -- factory -------------------------------------------------------------------------------


def test_factory_builds_the_default_chain(server, tmp_path):
    llm = LLM(
        "openai:gpt-4o-mini",
        base_url=server.url,
        max_concurrency=3,
        rpm=100,
        call_log=tmp_path / "calls.jsonl",
    )
    assert isinstance(llm, Meter)
    assert llm.model == "gpt-4o-mini"
    assert llm.max_concurrency == 3
    limits = find_engine(llm, Limits)
    assert limits.max_retries == 4 and limits.rpm is not None
    cache = find_engine(llm, Cache)
    assert cache.path == tmp_path / "cache-dir" / "cache.sqlite3"
    assert isinstance(find_engine(llm, OpenAIEngine), OpenAIEngine)
    assert llm.chat("hi").text == "fake reply"
    assert json.loads((tmp_path / "calls.jsonl").read_text())["response"]["text"] == "fake reply"


def test_factory_cache_switches(server, monkeypatch, tmp_path):
    assert find_engine(LLM("m", base_url=server.url, cache=False), Cache) is None
    custom = find_engine(LLM("m", base_url=server.url, cache=tmp_path / "c.db"), Cache)
    assert custom.path == tmp_path / "c.db"
    monkeypatch.setenv("TRACEGRAD_NO_CACHE", "1")
    assert find_engine(LLM("m", base_url=server.url), Cache) is None


def test_factory_mock_and_spec_parsing():
    llm = LLM("mock:demo", replies=["one"])
    mock = find_engine(llm, MockLLM)
    assert mock.model == "demo"
    assert llm.chat("x").text == "one"
    assert find_engine(llm, Cache) is None
    assert parse_spec("mock") == ("mock", "mock")
    assert parse_spec("gpt-4o") == ("openai", "gpt-4o")
    assert parse_spec("llama3.1:8b") == ("openai", "llama3.1:8b")
    with pytest.raises(ConfigurationError):
        parse_spec("openai:")
