"""tracegrad: optimize LLM workflows with textual gradients.

Write a pipeline in plain Python out of prompts (``Parameter``), LLM calls (``LLMCall``)
and functions (``@op``); call ``loss.backward()``; let an optimizer rewrite the
parameters. See README.md for the tour.
"""

from __future__ import annotations

from . import optim, prompts, tracing
from .backward import BackwardResult, TextualPropagator, TracePropagator, backward
from .core import (
    Feedback,
    Module,
    Parameter,
    Variable,
    backward_llm,
    enable_grad,
    get_backward_llm,
    graph,
    no_grad,
    parameters_of,
    set_backward_llm,
    shorten,
)
from .core.demos import Demos
from .llm.base import (
    Completion,
    ConfigurationError,
    Engine,
    Image,
    LLMError,
    Request,
    RetryableError,
    StructuredOutputError,
    ToolCall,
    Usage,
)
from .llm.batch import BatchOptions
from .llm.meter import Budget, BudgetExceeded
from .ops import (
    Agent,
    Chat,
    ExecutionError,
    FormattedLLMCall,
    LLMCall,
    MetricLoss,
    MultiFieldEvaluation,
    StructuredVariable,
    TextLoss,
    Tool,
    ToolArgumentsError,
    aggregate,
    concat,
    format,
    op,
    tool,
)
from .ops import sum_losses as sum
from .optim import OPRO, TGD, Optimizer, Reflect, StepResult, TraceOptimizer, trace_listing
from .sandbox import SandboxError, SandboxUnavailable, allow_weak_sandbox
from .template import TemplateError
from .tracing import disable_tracing, enable_tracing
from .train import (
    Dataset,
    DatasetError,
    EvalResult,
    Example,
    OptimizeResult,
    Trainer,
    evaluate,
    load_dataset,
    load_run,
    metrics,
    optimize,
    write_report,
)

__version__ = "0.1.0"
tracing.enable_from_env()  # TRACEGRAD_OTEL=1; imports OpenTelemetry only then


def __getattr__(name: str):
    # tg.LLM imports the openai SDK, which is slow: only when first used.
    if name in ("LLM", "OpenAIEngine"):
        from . import llm

        return getattr(llm, name)
    if name == "Graph":  # networkx, likewise
        from .core.nxgraph import Graph

        return Graph
    raise AttributeError(f"module 'tracegrad' has no attribute {name!r}")

__all__ = [
    "BackwardResult", "BatchOptions", "Budget", "Demos", "Dataset", "DatasetError", "EvalResult", "Example", "OptimizeResult", "Trainer", "evaluate", "load_dataset", "load_run", "metrics", "optimize", "write_report", "BudgetExceeded", "Completion", "ConfigurationError", "LLM", "RetryableError", "OPRO", "Optimizer", "Reflect", "StepResult", "TGD", "TraceOptimizer", "Engine", "ExecutionError", "Feedback", "FormattedLLMCall",
    "Graph", "Image", "LLMCall", "LLMError", "MetricLoss", "Module", "MultiFieldEvaluation",
    "Parameter", "Request", "SandboxError", "SandboxUnavailable", "allow_weak_sandbox", "StructuredOutputError", "TemplateError", "TextLoss",
    "TextualPropagator", "TracePropagator", "Usage", "Variable", "aggregate", "backward",
    "backward_llm", "concat", "enable_grad", "format", "get_backward_llm", "graph", "no_grad",
    "op", "optim", "parameters_of", "prompts", "set_backward_llm", "shorten", "sum",
    "disable_tracing", "enable_tracing", "tracing",
    "Agent", "Chat", "StructuredVariable", "Tool", "ToolArgumentsError", "ToolCall", "tool",
    "trace_listing",
]
