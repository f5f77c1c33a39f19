from .base import (
    BaseEngine, Completion, Engine, EngineWrapper, Image, LLMError, Message, Request,
    StructuredOutputError, Usage, find_engine,
)
from .structured import acomplete_structured, complete_json, complete_structured
