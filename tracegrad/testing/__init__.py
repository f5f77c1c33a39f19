"""Offline tools for testing LLM pipelines: scripted engines, a fake server, record/replay."""

from .mock import MockLLM
from .replay import ReplayLLM
from .server import FakeOpenAIServer

__all__ = ["MockLLM", "FakeOpenAIServer", "ReplayLLM"]
