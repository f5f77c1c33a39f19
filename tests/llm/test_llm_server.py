"""FakeOpenAIServer itself: scripting, recording, faults, shutdown."""

from __future__ import annotations

import http.client
import json
import threading
import time
from urllib.parse import urlsplit

import openai
import pytest

from tracegrad.testing import FakeOpenAIServer
from tracegrad.testing.pytest_plugin import fake_openai_server  # noqa: F401 -- fixture under test
from tracegrad.testing.server import AUTHORIZATION_MARK


def post(server: FakeOpenAIServer, body: dict, path: str = "/v1/chat/completions", **headers):
    u = urlsplit(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **headers})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), data


def chat(text: str = "hi", **extra) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": text}], **extra}


def client(server: FakeOpenAIServer, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="sk-test-x", max_retries=0, **kw)


def test_speaks_openai_to_the_real_client():
    with FakeOpenAIServer(["first", "second"], default="later", model="served") as s:
        c = client(s)
        assert [m.id for m in c.models.list()] == ["served"]
        texts = [
            c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": q}])
            for q in ("a", "b", "c")
        ]
        assert [t.choices[0].message.content for t in texts] == ["first", "second", "later"]
        assert texts[0].model == "gpt-4o"
        assert texts[0].usage.total_tokens == texts[0].usage.prompt_tokens + 2
        assert s.url.startswith("http://127.0.0.1:") and s.url.endswith("/v1")


def test_usage_is_deterministic_from_the_text(server):
    _, _, a = post(server, chat("x" * 40))
    _, _, b = post(server, chat("x" * 40))
    ua, ub = json.loads(a)["usage"], json.loads(b)["usage"]
    assert ua == ub
    assert ua["prompt_tokens"] == 10 + 4  # ~4 characters per token, plus message overhead


def test_callable_and_pattern_replies():
    with FakeOpenAIServer(lambda body: body["messages"][-1]["content"].upper()) as s:
        assert json.loads(post(s, chat("shout"))[2])["choices"][0]["message"]["content"] == "SHOUT"
    rules = {r"capital of France": "Paris", r"\d\+\d": lambda body: "a sum"}
    with FakeOpenAIServer(rules, default=None) as s:
        reply = json.loads(post(s, chat("What is the capital of France?"))[2])
        assert reply["choices"][0]["message"]["content"] == "Paris"
        reply = json.loads(post(s, chat("2+2"))[2])
        assert reply["choices"][0]["message"]["content"] == "a sum"
        assert post(s, chat("unmatched"))[0] == 500


def test_requests_are_recorded_without_the_key(server):
    post(server, chat("hi", temperature=0.5), Authorization="Bearer sk-very-secret", X_Custom="1")
    (req,) = server.requests
    assert req["temperature"] == 0.5 and req["messages"][0]["content"] == "hi"
    assert req["_authorized"] is True
    assert "authorization" not in req["_headers"]
    assert "sk-very-secret" not in json.dumps(req)
    assert req["_headers"]["x_custom"] == "1"


def test_echo_authorization_puts_the_header_into_replies():
    """The hostile server of issue 12: where a reply holds the mark the header goes there,
    otherwise on a line at the end; the server still records no key."""
    replies = [f"key: {AUTHORIZATION_MARK}!", "plain"]
    with FakeOpenAIServer(replies, echo_authorization=True) as s:
        c = client(s)
        texts = [c.chat.completions.create(model="m", messages=[{"role": "user", "content": q}])
                 .choices[0].message.content for q in ("a", "b")]
        assert texts == ["key: Bearer sk-test-x!", "plain\nBearer sk-test-x"]
        assert "sk-test-x" not in json.dumps(s.requests)
    with FakeOpenAIServer([f"key: {AUTHORIZATION_MARK}"]) as s:  # off by default
        assert json.loads(post(s, chat("q"), Authorization="Bearer sk-z")[2])[
            "choices"][0]["message"]["content"] == f"key: {AUTHORIZATION_MARK}"


def test_status_faults(server):
    server.inject("429")
    status, headers, _ = post(server, chat())
    assert status == 429 and headers["Retry-After"] == "0"
    server.inject("429", retry_after=None)
    status, headers, _ = post(server, chat())
    assert status == 429 and "Retry-After" not in headers
    for code in ("500", "502", "503"):
        server.inject(code)
        assert post(server, chat())[0] == int(code)
    assert post(server, chat())[0] == 200  # faults are used up
    assert server.request_count == 6


def test_faults_queue_in_order_and_count(server):
    server.inject("500", times=2)
    server.inject("429")
    assert [post(server, chat())[0] for _ in range(4)] == [500, 500, 429, 200]
    with pytest.raises(ValueError, match="unknown fault"):
        server.inject("418")


def test_content_faults(server):
    server.add_replies("abcdefgh", "abc")
    server.inject("length")
    r = json.loads(post(server, chat())[2])["choices"][0]
    assert r["finish_reason"] == "length" and r["message"]["content"] == "abcd"
    server.inject("huge")
    assert len(json.loads(post(server, chat())[2])["choices"][0]["message"]["content"]) == 1_000_000
    server.inject("empty")
    assert json.loads(post(server, chat())[2])["choices"][0]["message"]["content"] == ""
    server.inject("whitespace")
    assert json.loads(post(server, chat())[2])["choices"][0]["message"]["content"].strip() == ""
    server.inject("malformed")
    status, _, data = post(server, chat())
    assert status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(data)


def test_drop_closes_without_reply(server):
    server.inject("drop")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        post(server, chat())


def test_json_schema_rejection():
    schema = {"type": "json_schema", "json_schema": {"name": "A", "schema": {"type": "object"}}}
    with FakeOpenAIServer(json_schema_supported=False) as s:
        assert post(s, chat(response_format=schema))[0] == 400
        assert post(s, chat())[0] == 200
    with FakeOpenAIServer() as s:
        s.inject("400-json-schema")
        status, _, data = post(s, chat(response_format=schema))
        assert status == 400 and b"json_schema" in data
        assert post(s, chat(response_format=schema))[0] == 200


def test_hang_does_not_block_shutdown():
    s = FakeOpenAIServer().start()
    s.inject("hang", seconds=30)
    errors = []

    def call():
        try:
            post(s, chat())
        except Exception as e:  # the connection closes when the server stops
            errors.append(e)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.1)
    t0 = time.perf_counter()
    s.stop()
    t.join(5)
    assert time.perf_counter() - t0 < 3
    assert not t.is_alive() and errors


def test_max_in_flight_counts_concurrent_requests():
    with FakeOpenAIServer(latency=0.05) as s:
        threads = [threading.Thread(target=post, args=(s, chat())) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert s.request_count == 6
        assert 1 < s.max_in_flight <= 6


def test_unknown_routes_are_404(server):
    assert post(server, chat(), path="/v1/completions")[0] == 404


def test_pytest_fixture(fake_openai_server):  # noqa: F811
    fake_openai_server.add_replies("from the fixture")
    reply = client(fake_openai_server).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "from the fixture"
