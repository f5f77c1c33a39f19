"""The ``tracegrad`` console script, kept outside the package on purpose.

Importing ``tracegrad`` and building the typer command take a few hundred milliseconds; a
Ctrl-C in that window used to end in a ``KeyboardInterrupt`` traceback and exit status -2.
This module imports nothing heavy and handles SIGINT itself until the app's own handling
takes over (``tracegrad.cli._shared``), so such a Ctrl-C exits 130 with one line.
"""

from __future__ import annotations

import os
import signal
import sys


def _interrupted(signum: int, frame: object) -> None:
    # os._exit, not SystemExit: raised inside an import, an exception can be wrapped
    # (a dataclass field's __set_name__ turns it into a RuntimeError traceback). Nothing
    # has been written yet, so there is nothing to flush or clean up.
    os.write(2, b"error: interrupted\n")
    os._exit(130)


def main() -> None:
    signal.signal(signal.SIGINT, _interrupted)
    try:
        from tracegrad.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:  # after the app restored Python's handler
        sys.stderr.write("error: interrupted\n")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
