"""The old way to enable tracegrad's fixtures, kept so existing conftests keep working.

The plugin is now ``tracegrad_pytest``, registered automatically when tracegrad is
installed; ``pytest_plugins = ["tracegrad.testing.pytest_plugin"]`` is no longer needed.
This module only re-exports the fixtures (no hooks, so listing it twice is harmless).
"""

from __future__ import annotations

from tracegrad_pytest import fake_openai_server, llm_cassette, mock_llm

__all__ = ["fake_openai_server", "llm_cassette", "mock_llm"]
