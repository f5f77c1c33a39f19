"""Training: datasets, metrics, the optimization loop, run directories and reports.

``optimize(program, train, val, metric=...)`` is the entry point; everything it does is
written to a run directory (:mod:`.runs`) that :func:`write_report` turns into HTML.
"""

from . import metrics
from .data import Dataset, DatasetError, Example, load_dataset
from .metrics import get_metric
from .report import render_report, write_report
from .runs import RunData, RunDir, load_run
from .trainer import EvalResult, OptimizeResult, Outcome, Trainer, evaluate, optimize

__all__ = [
    "Dataset",
    "DatasetError",
    "EvalResult",
    "Example",
    "OptimizeResult",
    "Outcome",
    "RunData",
    "RunDir",
    "Trainer",
    "evaluate",
    "get_metric",
    "load_dataset",
    "load_run",
    "metrics",
    "optimize",
    "render_report",
    "write_report",
]
