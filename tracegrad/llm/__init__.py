"""The LLM layer: one engine protocol, an OpenAI-compatible engine, and composable wrappers."""

from .base import (
    BaseEngine,
    Completion,
    ConfigurationError,
    ConnectionFailed,
    Engine,
    EngineWrapper,
    Image,
    LLMError,
    LLMTimeout,
    Message,
    Request,
    RetryableError,
    StructuredOutputError,
    ToolCall,
    Usage,
    find_engine,
)
from .batch import BatchOptions, BatchRouter
from .cache import Cache
from .calllog import CallLog
from .limits import Limits
from .meter import Budget, BudgetExceeded, Meter, UsageOverrun
from .pricing import cost, set_pricing
from .structured import acomplete_structured, complete_structured


def __getattr__(name: str):
    # `openai` takes seconds to import; load it only when an OpenAI engine is wanted.
    if name == "LLM":
        from .factory import LLM

        return LLM
    if name == "OpenAIEngine":
        from .openai import OpenAIEngine

        return OpenAIEngine
    raise AttributeError(f"module 'tracegrad.llm' has no attribute {name!r}")

__all__ = [
    "Engine",
    "BaseEngine",
    "EngineWrapper",
    "Request",
    "Completion",
    "ToolCall",
    "Usage",
    "Image",
    "Message",
    "LLMError",
    "StructuredOutputError",
    "ConfigurationError",
    "ConnectionFailed",
    "RetryableError",
    "LLMTimeout",
    "OpenAIEngine",
    "LLM",
    "Cache",
    "BatchOptions",
    "BatchRouter",
    "Limits",
    "Meter",
    "Budget",
    "BudgetExceeded",
    "UsageOverrun",
    "CallLog",
    "complete_structured",
    "acomplete_structured",
    "cost",
    "set_pricing",
    "find_engine",
]
