from .mock import MockLLM, ScriptedLLM

__all__ = ["MockLLM", "ScriptedLLM"]
