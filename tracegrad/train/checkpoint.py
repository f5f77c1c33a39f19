"""A run's resumable files: ``state.json`` after every step, ``best.json``, the graph.

The trainer builds the state document; this module decides what reaches the disk when,
so that a run stopped at any moment (budget, Ctrl-C, an error, ``kill -9``) resumes to
exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable
from typing import Any

from ..core.graph import graph as build_graph
from ..core.variable import Variable
from .pool import Candidate
from .runs import BEST, CONFIG, STATE, RunDir, check_resumable, remove_stale_temps
from .usage import describe_engine, engines_in

__all__ = ["Checkpoint", "run_config", "state_doc"]


class Checkpoint:
    """Writes to a run directory, or does nothing when the run keeps no files."""

    def __init__(self, rd: RunDir | None) -> None:
        self.rd = rd
        self.last: dict[str, Any] | None = None  # the state.json last written

    def save(self, doc: dict[str, Any]) -> None:
        if self.rd is None:
            return
        self.last = copy.deepcopy(doc)  # later in-step edits must not leak in
        self.rd.write_json(STATE, self.last)

    def mark_stopped(self, stopped: str, step_done: int, fresh: Callable[[], dict[str, Any]],
                     usage: dict[str, Any], elapsed: float) -> None:
        """Record why the run ended without touching the last step's resumable state.

        A step cut short (budget, error) may have advanced the optimizer's memory; saving
        that (``fresh()``) would make a resumed run differ from an uninterrupted one.
        """
        if self.rd is None:
            return
        history = self.rd.read_history()
        recorded = history[-1].get("step") if history else 0
        if self.last is None or (recorded == step_done and self.last.get("step") == step_done - 1):
            # Stopped (Ctrl-C) after a finished step's history line was written but before
            # its state was: memory holds exactly that step's values, so save them rather
            # than leave a state one step behind the history (a resume would redo the step).
            self.save(fresh())
            return
        doc = dict(self.last)
        doc["stopped_reason"] = stopped
        doc["usage"] = usage  # money spent in the cut step still counts
        doc["elapsed_s"] = round(elapsed, 3)
        self.rd.write_json(STATE, doc)

    def save_examples(self, outcomes: Any, best: Candidate, val: Any, train: Any,
                      program: Any) -> None:
        """The best candidate's per-example table, on validation (else training) data."""
        from .examples import save_best_examples

        split, data = ("val", val) if val is not None else ("train", train)
        save_best_examples(self.rd, outcomes, best, split, data, program)

    def save_best(self, best: Candidate, baseline_score: float | None, split: str) -> None:
        if self.rd is None:
            return
        self.rd.write_json(BEST, {
            "id": best["id"],
            "step": best["step"],
            "score": best["score"],
            "baseline_score": baseline_score,
            "state": best["state"],
            "hash": best["hash"],
            "split": split,
        })

    def write_graph(self, loss: Variable) -> None:
        """The first traced graph, for the report; a failure here must not stop a run."""
        if self.rd is None or self.rd.file("graph.json").exists():
            return
        with contextlib.suppress(Exception):
            g = build_graph(loss)
            self.rd.write_json("graph.json", {
                "mermaid": g.to_mermaid(),
                "nodes": [{"id": n, **d} for n, d in g.nodes(data=True)],
                "edges": [list(e) for e in g.edges()],
            })

    def read_for_resume(self, names: Any,
                        datasets: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The run's config and last state (None: killed before its first step ended)."""
        assert self.rd is not None
        config = self.rd.read_json(CONFIG)
        if config is None:
            raise FileNotFoundError(f"cannot resume: no {CONFIG} in {self.rd.path}")
        check_resumable(config, names, datasets)
        remove_stale_temps(self.rd.path)
        state = self.rd.read_json(STATE)
        if state is None:
            self.rd.truncate_history(0)  # start over in place
        else:
            self.last = copy.deepcopy(state)
        return config, state


def run_config(t: Any) -> dict[str, Any]:
    """What ``config.json`` records about a run (a :class:`~.trainer.Trainer`): enough to
    know what ran and to refuse a resume with other parameters or data; never a key."""
    from .. import __version__

    o = t.opts
    return {
        "tracegrad_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "program": getattr(t.program, "__qualname__", None)
        or type(t.program).__qualname__,
        "optimizer": {
            "name": t.optimizer_name,
            "class": type(t.optimizer).__name__,
            "needs_backward": bool(getattr(t.optimizer, "needs_backward", True)),
            "engine": describe_engine(t.optimizer_engine),
        },
        "metric": t.metric_name,
        "steps": t.steps,
        **{k: getattr(o, k) for k in ("epochs", "batch_size", "seed", "gate", "patience",
                                       "pool_size", "pareto", "beam", "positive_examples",
                                       "concurrency")},
        "budget": t.budget.to_dict() if t.budget is not None else None,
        "engines": {"program": [describe_engine(e) for e in engines_in(t.program)],
                    "engine": describe_engine(o.engine)},
        "datasets": {
            "train": t.train.describe(),
            "val": t.val.describe() if t.val is not None else None,
        },
        "parameters": {
            name: {"initial": p.value, "role": p.role, "kind": p.value_kind,
                   "trainable": p.requires_grad, "constraints": list(p.constraints)}
            for name, p in t.named.items()
        },
        "user": dict(o.config or {}),
    }


def span_attributes(t: Any) -> dict[str, Any]:
    """The attributes of a run's root span (``tracegrad.optimize``): what ran, on what."""
    return {"tracegrad.optimizer": t.optimizer_name, "tracegrad.metric": t.metric_name,
            "tracegrad.steps": t.steps, "tracegrad.batch_size": t.opts.batch_size,
            "tracegrad.train.examples": len(t.train),
            "tracegrad.val.examples": len(t.val) if t.val is not None else 0}


def state_doc(t: Any, stopped: str | None) -> dict[str, Any]:
    """The ``state.json`` document of trainer ``t``: everything a resume needs."""
    try:
        opt_state = t.optimizer.state_dict()
    except Exception as e:  # noqa: BLE001 - a broken state_dict must not lose the run
        opt_state = {"error": f"{type(e).__name__}: {e}"}
    return {
        "version": 1,
        "step": t.step_done,
        "steps": t.steps,
        "current": t.pool.current_id,
        "pool": t.pool.entries,
        "baseline": t.baseline,
        "baseline_recorded": t.baseline_recorded,
        "no_improve": t.no_improve,
        "optimizer": opt_state,
        "rng": {"seed": t.opts.seed, "scheme": "random.Random(f'{seed}:{purpose}:{step}')"},
        "usage": t._usage(),
        "elapsed_s": round(t._elapsed(), 3),
        "stopped_reason": stopped,
        "merged": sorted(t.merged),
        "metric_calls": t._metric_calls(),
    }
