"""CallLog: every call on one JSON line, never a credential."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tracegrad.llm import LLM, CallLog, Image, LLMError, RetryableError
from tracegrad.llm.base import make_content, make_request
from tracegrad.llm.calllog import redact
from tracegrad.testing import MockLLM

SECRET = "sk-test-SECRET-1234567890"


def test_log_records_calls_hits_and_errors(server, tmp_path):
    log = tmp_path / "logs" / "calls.jsonl"
    llm = LLM(
        "gpt-4o-mini",
        base_url=server.url,
        api_key=SECRET,
        call_log=log,
        cache=tmp_path / "c.db",
        max_retries=0,
    )
    llm.chat("hello", purpose="judge", temperature=0.2)
    llm.chat("hello", purpose="judge", temperature=0.2)
    server.inject("503")
    with pytest.raises(RetryableError):
        llm.chat("fails")
    lines = log.read_text().splitlines()
    assert len(lines) == 3
    first, hit, failed = (json.loads(x) for x in lines)
    assert first["purpose"] == "judge" and first["model"] == "gpt-4o-mini"
    assert first["request"]["messages"] == [{"role": "user", "content": "hello"}]
    assert first["request"]["params"] == {"temperature": 0.2}
    assert first["response"]["text"] == "fake reply"
    assert first["response"]["usage"]["prompt_tokens"] > 0
    assert first["cached"] is False and hit["cached"] is True
    assert first["duration_s"] >= 0 and "time" in first
    assert failed["response"] is None
    assert failed["error"]["type"] == "RetryableError" and failed["error"]["status"] == 503


def test_log_never_contains_the_key(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    log = tmp_path / "calls.jsonl"
    llm = LLM("gpt-4o-mini", base_url=server.url, call_log=log, cache=False, max_retries=0)
    # a user who pastes secrets into a prompt, a reply that echoes them
    server.add_replies(f"your key is {SECRET}", "Authorization: Bearer abc.def-123456")
    llm.chat(f"my key is {SECRET} and sk-another-key-ABCDEF123456")
    llm.chat('headers: {"Authorization": "Bearer xyz-secret-token-9999"}')
    for fault in ("429", "500", "drop", "malformed"):
        server.inject(fault)
        with pytest.raises(LLMError):
            llm.chat(f"fault {fault}")
    text = log.read_text()
    assert len(text.splitlines()) == 6
    assert SECRET not in text
    assert "sk-another-key-ABCDEF123456" not in text
    assert "xyz-secret-token-9999" not in text and "abc.def-123456" not in text
    assert "[REDACTED]" in text
    for line in text.splitlines():
        json.loads(line)  # scrubbing keeps every line valid JSON


def test_explicit_key_is_scrubbed_even_if_unusual(tmp_path):
    odd_key = "corp-key-0000-1111"
    log = tmp_path / "calls.jsonl"
    engine = CallLog(MockLLM([f"echo {odd_key}"]), log, secrets=[odd_key])
    engine.chat("hi")
    assert odd_key not in log.read_text()


def test_images_are_logged_by_size(tmp_path):
    log = tmp_path / "calls.jsonl"
    engine = CallLog(MockLLM(), log)
    img = Image(b"x" * 3000)
    engine.complete(make_request([{"role": "user", "content": make_content(["see", img])}]))
    text = log.read_text()
    assert "<3000 bytes>" in text
    assert img.data_url() not in text


def test_concurrent_writers_keep_lines_whole(tmp_path):
    log = tmp_path / "calls.jsonl"
    engine = CallLog(MockLLM(default="y" * 5000), log)

    async def tasks():
        await asyncio.gather(*(engine.achat(f"a{i}") for i in range(20)))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: engine.chat(f"t{i}"), range(40)))
    asyncio.run(tasks())
    entries = engine.entries()
    assert len(entries) == 60
    assert all(e["response"]["text"] == "y" * 5000 for e in entries)


def test_redact_patterns():
    out = redact("key sk-proj-AbC123xyz789 auth='Authorization: Bearer t0k3n.value' plain")
    assert "AbC123xyz789" not in out and "t0k3n.value" not in out
    assert out.endswith("plain")
