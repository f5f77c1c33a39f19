"""Offline tools for testing LLM pipelines: scripted engines, a fake server, record/replay.

The pytest fixtures built on them (``mock_llm``, ``fake_openai_server``, ``llm_cassette``)
come with the ``tracegrad_pytest`` plugin, registered automatically.
"""

from .cassette import Cassette, CassetteMiss
from .mock import MockLLM, tool_reply
from .replay import ReplayLLM
from .server import FakeOpenAIServer

__all__ = ["Cassette", "CassetteMiss", "MockLLM", "FakeOpenAIServer", "ReplayLLM", "tool_reply"]
