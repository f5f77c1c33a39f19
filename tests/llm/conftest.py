"""Fixtures for the LLM layer tests: a fake server and engines pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tracegrad.llm import LLM, Meter, OpenAIEngine, set_pricing
from tracegrad.testing import FakeOpenAIServer

SECRET = "sk-test-SECRET-1234567890"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    """No test may see a real key, the user's cache or pricing file."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TRACEGRAD_NO_CACHE", "TRACEGRAD_PRICING"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRACEGRAD_CACHE_DIR", str(tmp_path / "cache-dir"))
    yield
    set_pricing(None)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as s:
        yield s


@pytest.fixture
def make_llm(server: FakeOpenAIServer) -> Callable[..., Meter]:
    """``tg.LLM`` on the fake server with a recognisable key, tiny backoff and no cache."""

    def make(spec: str = "openai:gpt-4o-mini", **kw: Any) -> Meter:
        kw.setdefault("base_url", server.url)
        kw.setdefault("api_key", SECRET)
        kw.setdefault("cache", False)
        kw.setdefault("backoff_base", 0.001)
        return LLM(spec, **kw)

    return make


@pytest.fixture
def engine(server: FakeOpenAIServer) -> OpenAIEngine:
    return OpenAIEngine("gpt-4o-mini", base_url=server.url, api_key=SECRET, timeout=5.0)
