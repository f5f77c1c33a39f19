"""The plain chat path (``_ChatPoster``): the SDK's own HTTP client, headers and errors,
without its request machinery (issue 15: client CPU per call)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tracegrad.llm import OpenAIEngine
from tracegrad.llm.base import LLMError, RetryableError, make_request
from tracegrad.testing import FakeOpenAIServer

SECRET = "sk-test-SECRET-poster-123456"


def test_plain_calls_take_the_poster_with_the_sdk_headers(server: FakeOpenAIServer):
    eng = OpenAIEngine("gpt-4o-mini", base_url=server.url, api_key=SECRET,
                       default_headers={"X-Team": "evals"})
    out = eng.complete(make_request([{"role": "user", "content": "hello"}], max_tokens=50))
    assert out.text and eng._poster is not None
    sent = server.requests[-1]
    assert sent["_authorized"] and sent["max_tokens"] == 50
    assert sent["_headers"]["x-team"] == "evals"
    assert sent["_headers"]["user-agent"].startswith("AsyncOpenAI/Python")
    assert sent["_headers"]["content-type"] == "application/json"


def test_extra_body_fields_are_sent_inline(server: FakeOpenAIServer):
    eng = OpenAIEngine("gpt-4o-mini", base_url=server.url, api_key=SECRET)
    eng.complete(make_request([{"role": "user", "content": "hi"}], top_k=3))  # not an SDK field
    assert server.requests[-1]["top_k"] == 3


class _Minimal(BaseHTTPRequestHandler):
    """A server that answers with the fewest fields a chat completion can have."""

    status = 200
    body: dict = {"choices": [{"message": {"role": "assistant", "content": "hi there"}}]}

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        data = json.dumps(self.body).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def minimal():
    httpd = HTTPServer(("127.0.0.1", 0), _Minimal)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    _Minimal.status, _Minimal.body = 200, {
        "choices": [{"message": {"role": "assistant", "content": "hi there"}}]}


def test_a_reply_without_optional_fields_is_read_leniently(minimal):
    eng = OpenAIEngine("m", base_url=f"http://127.0.0.1:{minimal.server_port}/v1",
                       api_key=SECRET, max_retries=0)
    out = eng.complete(make_request([{"role": "user", "content": "hi"}]))
    assert out.text == "hi there"
    assert out.usage.estimated  # no usage in the reply: estimated, not zero


def test_status_errors_are_the_sdk_errors_mapped_as_before(minimal):
    _Minimal.status = 503
    _Minimal.body = {"error": {"message": "overloaded", "type": "server_error"}}
    eng = OpenAIEngine("m", base_url=f"http://127.0.0.1:{minimal.server_port}/v1",
                       api_key=SECRET, max_retries=0)
    with pytest.raises(RetryableError, match="HTTP 503: Error code: 503 - overloaded"):
        eng.complete(make_request([{"role": "user", "content": "hi"}]))
    _Minimal.status = 400
    _Minimal.body = {"error": {"message": "bad field", "type": "invalid_request_error"}}
    with pytest.raises(LLMError, match="rejected the request \\(HTTP 400\\)"):
        eng.complete(make_request([{"role": "user", "content": "hi"}]))


def test_a_body_that_is_not_json_is_a_retryable_malformed_reply(minimal):
    _Minimal.body = "not json"  # json.dumps makes it a JSON string, not an object
    eng = OpenAIEngine("m", base_url=f"http://127.0.0.1:{minimal.server_port}/v1",
                       api_key=SECRET, max_retries=0)
    with pytest.raises(LLMError):
        eng.complete(make_request([{"role": "user", "content": "hi"}]))
