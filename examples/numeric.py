"""Numeric parameters: tune numbers with OPRO from a scoreboard of earlier tries.

A taxi fare model ``fare = base + per_km * distance`` has two number Parameters. The
score of a pair of values is how well the model predicts observed fares. OPRO needs no
backward pass: each step shows the optimizer the best (values, score) pairs so far,
sorted so the best come last, and asks for values that should score higher.

Runs offline by default on a scripted MockLLM that reads the scoreboard in the request
and samples new values near the best pair, as far out as the top pairs are spread. To
use a real model:

    python examples/numeric.py --model openai:gpt-4o-mini [--base-url URL]
"""

from __future__ import annotations

import argparse
import random
import re
import zlib

import tracegrad as tg
from tracegrad.llm.base import Request
from tracegrad.optim import OPRO
from tracegrad.testing import MockLLM
from tracegrad.testing.mock import request_text

TRIPS = [(1.0, 4.3), (3.0, 7.9), (5.0, 11.5), (8.0, 16.9), (12.0, 24.1)]  # (km, fare paid)


def evaluate(base: float, per_km: float) -> tuple[float, float]:
    """(score in [0, 1], mean absolute error in currency units)."""
    mae = sum(abs(base + per_km * km - fare) for km, fare in TRIPS) / len(TRIPS)
    return 1.0 / (1.0 + mae), mae


# -- the offline stand-in for a model: a random search around the scoreboard's best -----

_ENTRY = re.compile(r"### score ([\d.eE+-]+).*?\n(.*?)(?=\n### score |\n## |\Z)", re.S)
_VALUE = re.compile(r'<value name="([^"]+)">(.*?)</value>', re.S)


def _propose(text: str) -> str:
    """Sample near the best pair; the spread of the top pairs sets how far to look.

    Deterministic: the random draw is seeded by the scoreboard it reads.
    """
    names = re.findall(r"Write one <value name=\"NAME\">\.\.\.</value> block for each of: (.*)\.",
                       text)[0].split(", ")
    board_text = text.split("## Earlier values", 1)[-1]
    board = [(float(score), {n: float(v) for n, v in _VALUE.findall(body)})
             for score, body in _ENTRY.findall(board_text)]
    if not board:  # nothing scored yet: keep the current values
        current = dict(_VALUE.findall(text.split("## Current values", 1)[1]))
        return "\n".join(f'<value name="{n}">{current[n]}</value>' for n in names)
    top = sorted(board, key=lambda e: e[0], reverse=True)[:5]
    best = top[0][1]
    rng = random.Random(zlib.crc32(board_text.encode()))
    lines = []
    for n in names:
        spread = max(v[n] for _, v in top) - min(v[n] for _, v in top)
        sigma = 1.0 if len(top) < 2 else max(0.01, spread / 2)
        lines.append(f'<value name="{n}">{best[n] + rng.gauss(0, sigma):.3f}</value>')
    return "Sampling near the best pair so far.\n" + "\n".join(lines)


def mock_llm() -> MockLLM:
    def reply(request: Request) -> str:
        if request.purpose == "optimizer":
            return _propose(request_text(request))
        raise AssertionError(f"unexpected request: {request.purpose}")

    return MockLLM(reply)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a real model, e.g. openai:gpt-4o-mini (default: offline mock)")
    ap.add_argument("--base-url", help="OpenAI-compatible server URL")
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    if args.model:
        from tracegrad.llm import LLM

        engine = LLM(args.model, base_url=args.base_url)
    else:
        engine = mock_llm()
        print("(offline: scripted MockLLM; pass --model to use a real model)")

    base = tg.Parameter(1.0, role="fixed part of a taxi fare", name="base")
    per_km = tg.Parameter(1.0, role="price per kilometre", name="per_km")
    task = ("Choose the taxi fare parameters so that fare = base + per_km * distance "
            "predicts the fares passengers actually paid. The score is 1 / (1 + mean error).")
    optimizer = OPRO([base, per_km], engine, task=task, history=12)

    score, mae = evaluate(base.value, per_km.value)
    print(f"before: base={base.value:g} per_km={per_km.value:g} "
          f"score={score:.3f} mean_error={mae:.3f}")
    optimizer.record_score(score, f"mean absolute error {mae:.3f}")
    best = (score, base.value, per_km.value)
    for _ in range(args.steps):
        optimizer.step()
        score, mae = evaluate(base.value, per_km.value)
        optimizer.record_score(score, f"mean absolute error {mae:.3f}")
        if score > best[0]:
            best = (score, base.value, per_km.value)
    base.value, per_km.value = best[1], best[2]
    score, mae = evaluate(base.value, per_km.value)
    print(f"after: base={base.value:g} per_km={per_km.value:g} "
          f"score={score:.3f} mean_error={mae:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
