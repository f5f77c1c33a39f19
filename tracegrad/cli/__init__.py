"""The ``tracegrad`` command: optimize a prompt file without writing Python.

Results go to stdout (one JSON object with ``--json``); progress and logs go to stderr.
Exit codes: 0 success (also a run stopped by its budget: the best prompt found is saved),
1 runtime failure (LLM/server errors, a budget too small to finish the baseline),
2 usage or input error (bad prompt file, dataset or option), 130 interrupted (Ctrl-C; the
run directory is saved and can be resumed with ``--resume``).
"""


from __future__ import annotations

# each module registers its commands; imported in the order `--help` lists them
# isort: off
from . import optimize, evaluate, estimate, tools, batch  # noqa: F401
# isort: on
from ._shared import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CLIError, app

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "CLIError", "app", "main"]


def main() -> None:  # pragma: no cover - console entry point alias
    app()
