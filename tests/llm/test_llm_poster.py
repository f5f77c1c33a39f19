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


def test_the_direct_path_sends_the_headers_the_http_client_would(server: FakeOpenAIServer):
    """The poster skips httpx's client layer for tracegrad's own transport; what reaches
    the server must not change."""
    eng = OpenAIEngine("gpt-4o-mini", base_url=server.url, api_key=SECRET,
                       default_headers={"X-Team": "evals"})
    req = make_request([{"role": "user", "content": "hello"}], max_tokens=50)
    eng.complete(req)
    assert eng._poster is not None and eng._poster.direct is not None
    direct = dict(server.requests[-1]["_headers"])
    eng._poster.direct = None  # the httpx client's own path
    eng.complete(req)
    via_client = dict(server.requests[-1]["_headers"])
    assert direct == via_client
    assert direct["accept-encoding"] == "gzip, deflate" and direct["x-team"] == "evals"


class _Redirecting(_Minimal):
    def do_POST(self):  # noqa: N802
        if self.path.endswith("/old/chat/completions"):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(307)
            self.send_header("Location", "/v1/chat/completions")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_POST()


def test_a_redirect_is_followed_as_the_http_client_follows_it():
    httpd = HTTPServer(("127.0.0.1", 0), _Redirecting)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        eng = OpenAIEngine("m", base_url=f"http://127.0.0.1:{httpd.server_port}/old",
                           api_key=SECRET, max_retries=0)
        assert eng.complete(make_request([{"role": "user", "content": "hi"}])).text == "hi there"
        assert eng._poster is not None and eng._poster.direct is not None
    finally:
        httpd.shutdown()


def test_a_client_with_event_hooks_keeps_the_http_clients_path():
    import httpx2

    from tracegrad.llm.openai import Http1Transport, _direct_transport

    seen = []

    async def hook(request):
        seen.append(request)

    plain = httpx2.AsyncClient(transport=Http1Transport())
    hooked = httpx2.AsyncClient(transport=Http1Transport(), event_hooks={"request": [hook]})
    assert _direct_transport(plain) is plain._transport
    assert _direct_transport(hooked) is None
    assert _direct_transport(httpx2.AsyncClient()) is None  # httpx's own transport
