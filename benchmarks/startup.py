"""Start-up times: a fresh interpreter each run, median [min-max] of ``--runs``.

    python benchmarks/startup.py [--runs 10]

``import tracegrad`` loads no submodule (the package root is lazy); a script pays for
what it uses, so the second row imports the names a typical pipeline touches.
``tracegrad --help`` loads typer and the command modules, not the library.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass (the interpreter alone)": [sys.executable, "-c", "pass"],
    "import tracegrad": [sys.executable, "-c", "import tracegrad"],
    "import tracegrad; tg.Parameter, tg.LLMCall, tg.TGD, tg.optimize": [
        sys.executable, "-c", "import tracegrad as tg; tg.Parameter; tg.LLMCall; tg.TGD; "
        "tg.optimize"],
    "tracegrad --help": [shutil.which("tracegrad") or "tracegrad", "--help"],
    "tracegrad optimize --help": [shutil.which("tracegrad") or "tracegrad", "optimize", "--help"],
}


def measure(cmd: list[str], runs: int) -> list[float]:
    subprocess.run(cmd, capture_output=True, check=True)  # warm the OS file cache
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    print("| what | median s [min-max] |\n|---|--:|")
    for name, cmd in CASES.items():
        xs = measure(cmd, args.runs)
        print(f"| {name} | {statistics.median(xs):.3f} [{min(xs):.3f}-{max(xs):.3f}] |")


if __name__ == "__main__":
    main()
