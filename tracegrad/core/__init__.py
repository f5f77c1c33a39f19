from .context import (
    backward_llm,
    enable_grad,
    get_backward_llm,
    is_grad_enabled,
    no_grad,
    set_backward_llm,
)
from .graph import graph
from .module import Module
from .shorten import render, shorten
from .variable import Feedback, Parameter, Variable, generations, parameters_of, topo_order

__all__ = [
    "Feedback", "Graph", "Module", "Parameter", "Variable", "backward_llm", "enable_grad",
    "generations", "get_backward_llm", "graph", "is_grad_enabled", "no_grad", "parameters_of",
    "render", "set_backward_llm", "shorten", "topo_order",
]


def __getattr__(name: str) -> object:
    if name == "Graph":  # networkx is imported on first use (see .graph)
        from .nxgraph import Graph

        return Graph
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
