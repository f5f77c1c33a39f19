"""Optimizers: turn feedback (or scores) into new parameter values.

* :class:`TGD` -- one rewrite per parameter from its textual feedback (TextGrad line);
* :class:`TraceOptimizer` -- all parameters in one call from the execution trace (Trace line);
* :class:`OPRO` -- new values from a scoreboard of earlier values and scores, no backward;
* :class:`Reflect` -- GEPA-class: rewrites from the step's own examples, Pareto search, merge.

All of them check every proposed value against automatic constraints
(:mod:`tracegrad.optim.constraints`, :mod:`tracegrad.optim.code`) before applying it, and
declare the LLM calls a training step makes (``calls_per_step``). Names such as "tgd" are
resolved by :mod:`tracegrad.optim.registry`.
"""

from .base import Optimizer, OptimizerOptions, StepResult
from .code import ALLOWED_IMPORTS, validate_code
from .constraints import check as check_value
from .constraints import describe as describe_constraints
from .opro import OPRO
from .reflect import Reflect
from .registry import build_optimizer, optimizer_names
from .tgd import TGD
from .trace import TraceOptimizer, trace_listing

__all__ = [
    "ALLOWED_IMPORTS", "OPRO", "TGD", "Reflect", "Optimizer", "OptimizerOptions", "StepResult",
    "TraceOptimizer", "trace_listing", "build_optimizer", "check_value", "describe_constraints",
    "optimizer_names", "validate_code",
]
