from .agent import Agent, Chat, ToolOp
from .base import Op, as_variable, record
from .llm import FormattedLLMCall, LLMCall, LLMOp
from .loss import MetricLoss, MultiFieldEvaluation, TextLoss, aggregate, normalize_metric_result
from .loss import sum as sum_losses
from .python import ExecutionError, PythonOp, TracedFunction, op
from .structured import StructuredVariable
from .text import concat, format
from .tools import Tool, ToolArgumentsError, tool

__all__ = [
    "Agent", "Chat", "StructuredVariable", "Tool", "ToolArgumentsError", "ToolOp", "tool",
    "ExecutionError", "FormattedLLMCall", "LLMCall", "LLMOp", "MetricLoss", "MultiFieldEvaluation",
    "Op", "PythonOp", "TextLoss", "TracedFunction", "aggregate", "as_variable", "concat", "format",
    "normalize_metric_result", "op", "record", "sum_losses",
]
