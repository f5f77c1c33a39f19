"""pytest fixtures for testing against a fake OpenAI server.

Enable with ``pytest_plugins = ["tracegrad.testing.pytest_plugin"]`` in a conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .server import FakeOpenAIServer


@pytest.fixture
def fake_openai_server() -> Iterator[FakeOpenAIServer]:
    """A started :class:`FakeOpenAIServer`; script it with ``add_replies``/``inject``."""
    with FakeOpenAIServer() as server:
        yield server
