"""The ``tracegrad`` console script, kept outside the package on purpose.

Importing ``tracegrad`` takes a few hundred milliseconds; a Ctrl-C in that window used to
end in a ``KeyboardInterrupt`` traceback and exit status -2. This module imports nothing
heavy, so it can catch that interrupt and exit 130 with one line, like any other Ctrl-C.
"""

from __future__ import annotations

import sys


def main() -> None:
    # the whole of it: typer also builds the command (copying every option) before the
    # app's own Ctrl-C handling starts, and an interrupt there was a traceback too
    try:
        from tracegrad.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
