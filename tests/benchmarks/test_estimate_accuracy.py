"""``tracegrad estimate`` against the run it predicts, on every bundled prompt file
(benchmarks/estimate_accuracy.py, SIMULATED task world on a local fake server).

A run that goes all its steps must land within 25% of the estimate in calls and in
tokens; one that stops early on a perfect validation score must land inside the
estimate's range, and within 25% of the estimate for the steps it made.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import estimate_accuracy as ea  # noqa: E402


def _near(est: float, actual: float) -> bool:
    return abs(est - actual) <= ea.TOLERANCE * actual


@pytest.mark.parametrize("name", ea.FILES)
def test_a_full_run_is_within_25_percent_of_the_estimate(name: str, tmp_path: Path) -> None:
    r = ea.run_one(name, steps=4, scenario="full", work=tmp_path)
    assert r["stopped"] == "steps" and r["steps_done"] == 4
    assert r["calls"] == r["served"]  # the meter and the server agree on what was sent
    assert _near(r["est_calls"], r["calls"]), r
    assert _near(r["est_tokens"], r["tokens"]), r
    lo, hi = r["range_calls"]
    assert lo <= r["calls"] <= hi


@pytest.mark.parametrize("name", ea.FILES)
def test_an_early_stop_lands_in_the_range(name: str, tmp_path: Path) -> None:
    r = ea.run_one(name, steps=4, scenario="early", work=tmp_path)
    assert r["stopped"] == "perfect" and r["steps_done"] < 4
    lo, hi = r["range_calls"]
    assert lo <= r["calls"] <= hi
    assert r["range_tokens"][0] <= r["tokens"] <= r["range_tokens"][1]
    assert _near(r["est_calls_at_done"], r["calls"]), r
    assert _near(r["est_tokens_at_done"], r["tokens"]), r
    assert r["est_calls"] > r["calls"]  # the full estimate overstates an early stop
