"""tracegrad: optimize LLM workflows with textual gradients.

Write a pipeline in plain Python out of prompts (``Parameter``), LLM calls (``LLMCall``)
and functions (``@op``); call ``loss.backward()``; let an optimizer rewrite the
parameters. See README.md for the tour.
"""

# Lazy: ``import tracegrad`` loads no submodule until a name is used (PEP 562), so the
# CLI's ``--help`` and a script that needs one piece do not pay for pydantic, jinja2,
# asyncio and the optimizers up front. Every public name is listed in _EXPORTS; the
# TYPE_CHECKING block gives type checkers and IDEs the same names eagerly.

from __future__ import annotations

import importlib
import os
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, tuple[str, str | None]] = {
    "Agent": (".ops", 'Agent'),
    "aggregate": (".ops", 'aggregate'),
    "allow_weak_sandbox": (".sandbox", 'allow_weak_sandbox'),
    "backward": (".backward", 'backward'),
    "backward_llm": (".core", 'backward_llm'),
    "BackwardResult": (".backward", 'BackwardResult'),
    "BatchOptions": (".llm.batch", 'BatchOptions'),
    "Budget": (".llm.meter", 'Budget'),
    "BudgetExceeded": (".llm.meter", 'BudgetExceeded'),
    "Chat": (".ops", 'Chat'),
    "Completion": (".llm.base", 'Completion'),
    "concat": (".ops", 'concat'),
    "ConfigurationError": (".llm.base", 'ConfigurationError'),
    "Dataset": (".train", 'Dataset'),
    "DatasetError": (".train", 'DatasetError'),
    "Demos": (".core.demos", 'Demos'),
    "disable_tracing": (".tracing", 'disable_tracing'),
    "enable_grad": (".core", 'enable_grad'),
    "enable_tracing": (".tracing", 'enable_tracing'),
    "Engine": (".llm.base", 'Engine'),
    "EvalResult": (".train", 'EvalResult'),
    "evaluate": (".train", 'evaluate'),
    "Example": (".train", 'Example'),
    "ExecutionError": (".ops", 'ExecutionError'),
    "Feedback": (".core", 'Feedback'),
    "format": (".ops", 'format'),
    "FormattedLLMCall": (".ops", 'FormattedLLMCall'),
    "get_backward_llm": (".core", 'get_backward_llm'),
    "graph": (".core", 'graph'),
    "Graph": (".core.nxgraph", 'Graph'),
    "Image": (".llm.base", 'Image'),
    "LLM": (".llm", 'LLM'),
    "LLMCall": (".ops", 'LLMCall'),
    "LLMError": (".llm.base", 'LLMError'),
    "load_dataset": (".train", 'load_dataset'),
    "load_run": (".train", 'load_run'),
    "map": (".core.concurrency", 'map'),
    "MetricLoss": (".ops", 'MetricLoss'),
    "metrics": (".train", 'metrics'),
    "Module": (".core", 'Module'),
    "MultiFieldEvaluation": (".ops", 'MultiFieldEvaluation'),
    "no_grad": (".core", 'no_grad'),
    "op": (".ops", 'op'),
    "OpenAIEngine": (".llm", 'OpenAIEngine'),
    "OPRO": (".optim", 'OPRO'),
    "optim": (".optim", None),
    "optimize": (".train", 'optimize'),
    "Optimizer": (".optim", 'Optimizer'),
    "OptimizeResult": (".train", 'OptimizeResult'),
    "Parameter": (".core", 'Parameter'),
    "parameters_of": (".core", 'parameters_of'),
    "prompts": (".prompts", None),
    "Reflect": (".optim", 'Reflect'),
    "Request": (".llm.base", 'Request'),
    "RetryableError": (".llm.base", 'RetryableError'),
    "SandboxError": (".sandbox", 'SandboxError'),
    "SandboxUnavailable": (".sandbox", 'SandboxUnavailable'),
    "set_backward_llm": (".core", 'set_backward_llm'),
    "shorten": (".core", 'shorten'),
    "StepResult": (".optim", 'StepResult'),
    "StructuredOutputError": (".llm.base", 'StructuredOutputError'),
    "StructuredVariable": (".ops", 'StructuredVariable'),
    "sum": (".ops", 'sum_losses'),
    "TemplateError": (".template", 'TemplateError'),
    "TextLoss": (".ops", 'TextLoss'),
    "TextualPropagator": (".backward", 'TextualPropagator'),
    "TGD": (".optim", 'TGD'),
    "Tool": (".ops", 'Tool'),
    "tool": (".ops", 'tool'),
    "ToolArgumentsError": (".ops", 'ToolArgumentsError'),
    "ToolCall": (".llm.base", 'ToolCall'),
    "trace_listing": (".optim", 'trace_listing'),
    "TraceOptimizer": (".optim", 'TraceOptimizer'),
    "TracePropagator": (".backward", 'TracePropagator'),
    "tracing": (".tracing", None),
    "Trainer": (".train", 'Trainer'),
    "Usage": (".llm.base", 'Usage'),
    "Variable": (".core", 'Variable'),
    "write_report": (".train", 'write_report'),
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'tracegrad' has no attribute {name!r}") from None
    mod = importlib.import_module(module, __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """``tg.backward`` is the function, though ``tracegrad.backward`` is also a package:
    importing a submodule sets it as an attribute of its parent, which would hide the
    function once anything imported the package. Names exported as something else keep
    their export."""

    def __setattr__(self, name: str, value: Any) -> None:
        export = _EXPORTS.get(name)
        if export is not None and export[1] is not None and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:
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
    from .core.concurrency import map as map  # noqa: A004
    from .core.demos import Demos
    from .core.nxgraph import Graph
    from .llm import LLM
    from .llm import OpenAIEngine as OpenAIEngine
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

# TRACEGRAD_OTEL=1 traces this process from its start (the CLI included); the module, and
# OpenTelemetry, are imported only then
if os.environ.get("TRACEGRAD_OTEL", "").strip():
    from . import tracing as _tracing

    _tracing.enable_from_env()
