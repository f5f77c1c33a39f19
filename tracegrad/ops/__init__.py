from .base import Op, as_variable, record
from .llm import FormattedLLMCall, LLMCall, LLMOp
from .loss import MetricLoss, MultiFieldEvaluation, TextLoss, aggregate, normalize_metric_result
from .loss import sum as sum_losses
from .python import ExecutionError, PythonOp, TracedFunction, op
from .text import concat, format

__all__ = [
    "ExecutionError", "FormattedLLMCall", "LLMCall", "LLMOp", "MetricLoss", "MultiFieldEvaluation",
    "Op", "PythonOp", "TextLoss", "TracedFunction", "aggregate", "as_variable", "concat", "format",
    "normalize_metric_result", "op", "record", "sum_losses",
]
