"""What the peer runners (``peer_dspy.py``, ``peer_textgrad.py``) share, standard library only.

The runners execute in the peers' own venv, which need not have tracegrad; ``run.py``
(tracegrad's env) imports this module too, to build the runner's configuration and to check
its result. Nothing here imports dspy, textgrad or tracegrad.

The contract between ``run.py`` and a runner:

* ``run.py`` writes a configuration JSON (:func:`write_config`) and starts
  ``PEERS_PYTHON peer_X.py --config FILE --out RESULT``;
* the runner optimizes on ``train``/``val`` within ``metric_budget`` rollouts (and
  ``budget_usd``, priced with the ``prices`` table ``run.py`` took from tracegrad's), scores
  the starting and the optimized program on ``test``, and writes one JSON object
  (:func:`result_skeleton` filled in) to ``RESULT``.

Metrics mirror tracegrad's of the same name (``tests/benchmarks/test_real_peers.py`` checks
that they agree), so every framework is scored by one rule.
"""

from __future__ import annotations

import json
import math
import re
import string
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROTOCOL = 1

# -- metrics (the same rules as tracegrad.train.metrics.numeric / exact_match) ----------

_NUMBER = re.compile(
    r"(?<![\w.])[-+\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w])")
_PUNCT = string.punctuation + "\u201c\u201d\u2018\u2019\u00bf\u00a1\u2026"


def last_number(text: Any) -> float | None:
    """The last number written in ``text`` ("It is 1,234.5." -> 1234.5), or None."""
    found = None
    for m in _NUMBER.finditer(str(text)):
        s = m.group(0)
        if not any(c.isdigit() for c in s) or s.startswith(("e", "E")):
            continue
        try:
            found = float(s.replace(",", "").replace("\u2212", "-"))
        except ValueError:
            continue
    return found


def normalize(text: Any) -> str:
    t, prev = " ".join(str(text).lower().split()), None
    while t != prev:
        prev, t = t, t.strip(_PUNCT).strip()
    return t


def numeric(prediction: Any, expected: Any) -> tuple[float, str]:
    want, got = last_number(expected), last_number(prediction)
    if want is None:
        raise ValueError(f"numeric metric: the expected value {expected!r} holds no number")
    if got is None:
        return 0.0, f"Wrong: expected the number {want:g}, but the output contains no number."
    if math.isclose(got, want, rel_tol=0.0, abs_tol=1e-6):
        return 1.0, f"Correct: expected {want:g} and got {got:g}."
    return 0.0, f"Wrong: expected {want:g}, got {got:g} (the last number in the output)."


def exact_match(prediction: Any, expected: Any) -> tuple[float, str]:
    if normalize(prediction) == normalize(expected):
        return 1.0, f"Correct: expected {str(expected)[:200]!r} and got it."
    return 0.0, f"Wrong: expected {str(expected)[:200]!r}, got {str(prediction)[:200]!r}."


METRICS: dict[str, Callable[[Any, Any], tuple[float, str]]] = {
    "numeric": numeric, "exact_match": exact_match}


# -- usage and budget ------------------------------------------------------------------

class BudgetExhausted(BaseException):  # noqa: N818 - a stop signal, like KeyboardInterrupt
    """Raised into a framework that has no stopping hook once the dollar budget is spent.

    A BaseException so that the frameworks' ``except Exception`` retry and error-counting
    paths do not swallow it."""


class Meter:
    """Counts LLM calls, tokens and rollouts per phase ("optimize", "eval") and model.

    ``prices`` is {model: {"input": usd_per_1m, "output": usd_per_1m}} (tracegrad's table,
    passed in by run.py); ``budget_usd`` applies to the "optimize" phase only, as
    tracegrad's ``--budget-usd`` applies to ``tracegrad optimize`` only.
    """

    def __init__(self, prices: dict[str, dict[str, float]] | None = None,
                 budget_usd: float | None = None) -> None:
        self.prices = {_bare(k): v for k, v in (prices or {}).items()}
        self.budget_usd = budget_usd
        self.phase = "optimize"
        self._lock = threading.Lock()
        self.usage: dict[str, dict[str, dict[str, int]]] = {}
        self.rollouts: dict[str, int] = {}
        self.framework_usd: dict[str, float] = {}

    def llm_call(self, model: str, prompt_tokens: int | None, completion_tokens: int | None,
                 *, cached: bool = False, framework_usd: float | None = None) -> None:
        with self._lock:
            row = self.usage.setdefault(self.phase, {}).setdefault(_bare(model), {
                "calls": 0, "cached_calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
            if cached:
                row["cached_calls"] += 1
                return
            row["calls"] += 1
            row["prompt_tokens"] += int(prompt_tokens or 0)
            row["completion_tokens"] += int(completion_tokens or 0)
            if framework_usd:
                self.framework_usd[self.phase] = self.framework_usd.get(self.phase, 0.0) + \
                    float(framework_usd)

    def rollout(self, n: int = 1) -> None:
        with self._lock:
            self.rollouts[self.phase] = self.rollouts.get(self.phase, 0) + n

    def metric_calls(self, phase: str = "optimize") -> int:
        with self._lock:
            return self.rollouts.get(phase, 0)

    def spent_usd(self, phase: str = "optimize") -> float:
        """Dollars of ``phase`` at the ``prices`` given (unpriced models count 0)."""
        with self._lock:
            rows = dict(self.usage.get(phase, {}))
        total = 0.0
        for model, u in rows.items():
            p = self.prices.get(model)
            if p:
                total += (u["prompt_tokens"] * p["input"] + u["completion_tokens"] * p["output"]
                          ) / 1e6
        return total

    def over_budget(self) -> bool:
        return self.budget_usd is not None and self.phase == "optimize" and \
            self.spent_usd("optimize") >= self.budget_usd

    def check_budget(self) -> None:
        """Raise :class:`BudgetExhausted` when the optimization has spent its dollars."""
        if self.over_budget():
            raise BudgetExhausted(f"spent ${self.spent_usd():.4f} of ${self.budget_usd:g}")

    def totals(self) -> dict[str, Any]:
        with self._lock:
            usage = json.loads(json.dumps(self.usage))
            rollouts = dict(self.rollouts)
            fw = dict(self.framework_usd)
        calls = sum(u["calls"] for ph in usage.values() for u in ph.values())
        tokens = sum(u["prompt_tokens"] + u["completion_tokens"]
                     for ph in usage.values() for u in ph.values())
        return {"usage": usage, "llm_calls": calls, "tokens": tokens,
                "metric_calls": rollouts.get("optimize", 0),
                "eval_metric_calls": rollouts.get("eval", 0),
                "framework_usd": fw or None}


def _bare(model: str) -> str:
    m = model.strip().lower()
    for prefix in ("openai:", "openai/"):
        if m.startswith(prefix):
            m = m[len(prefix):]
    return m


def bare_model(spec: str) -> str:
    """``openai:gpt-4o-mini`` -> ``gpt-4o-mini`` (the name sent to the API)."""
    return spec.split(":", 1)[1] if ":" in spec else spec


# -- configuration and result files ---------------------------------------------------

CONFIG_KEYS = ("framework", "task", "metric", "instruction", "train", "val", "test", "model",
               "optimizer_model", "base_url", "metric_budget", "budget_usd", "prices", "seed",
               "steps", "batch_size", "num_threads", "workdir", "options")


def write_config(path: Path, **cfg: Any) -> Path:
    missing = [k for k in CONFIG_KEYS if k not in cfg]
    if missing:
        raise KeyError(f"peer config lacks {', '.join(missing)}")
    path.write_text(json.dumps({"protocol": PROTOCOL, **cfg}, indent=1))
    return path


def read_config(path: str | Path) -> dict[str, Any]:
    cfg = json.loads(Path(path).read_text())
    if cfg.get("protocol") != PROTOCOL:
        raise SystemExit(f"peer config protocol {cfg.get('protocol')} != {PROTOCOL}")
    return cfg


def result_skeleton(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"protocol": PROTOCOL, "framework": cfg["framework"], "test_before": None,
            "test_after": None, "val_before": None, "val_best": None,
            "metric_budget": cfg["metric_budget"], "stopped_reason": None, "settings": {},
            "final_instruction": None, "started": time.time()}


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    tmp.replace(path)


def versions(*packages: str) -> dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
