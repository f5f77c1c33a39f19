"""``optimize()``: the training loop, with the safety rails a paid run needs.

One step, as in minibatch SGD: sample a batch, run the pipeline on it concurrently, score
each output with the metric, aggregate the failures into one loss, run backward once,
let the optimizer propose new values. Unlike SGD, a textual step can easily make things
worse, so every proposal is *gated* (:mod:`.gate`): it is evaluated (on the validation
set, or on the batch when there is none) and reverted if it does not hold up. The best
candidates are kept in a small pool (:mod:`.pool`); the parameters end at the best one.

A run is written to a run directory after every step (:mod:`.runs`), so it can be
stopped by a budget, Ctrl-C or ``kill -9`` and resumed from its last finished step with
the same history. Sampling is derived from ``(seed, step)`` alone, so a resumed run draws
the same batches it would have drawn uninterrupted.

Beside it: :mod:`.options` (every option), :mod:`.evaluate` (running and scoring),
:mod:`.usage` (meters, budget), :mod:`.progress`, :mod:`.results`, :mod:`.search` (merge),
:mod:`.validation` (scoring proposals, stopped once they cannot be kept) and :mod:`.demos`
(few-shot demos bootstrapped from correct examples).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import random
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from ..core import telemetry
from ..core.context import backward_llm, get_backward_llm
from ..core.feedback import Evidence, step_io
from ..core.shorten import shorten
from ..core.variable import Variable
from ..ops.loss import aggregate
from ..optim.base import REJECTIONS
from ..optim.registry import build_optimizer, search_defaults
from .checkpoint import Checkpoint, run_config, span_attributes, state_doc
from .data import Example, load_dataset
from .demos import offer_successes, propose_demos
from .evaluate import (
    BudgetStop,
    Runner,
    ScoreCache,
    evaluate,
    fail_summary,
    is_budget_error,
    mean,
    positive_losses,
    raise_if_all_crashed,
    score_note,
)
from .gate import Verdict, decide
from .metrics import get_metric
from .options import TrainOptions, signature_with_options
from .params import give_task, named_parameters
from .pool import Candidate, Pool, candidate
from .progress import Progress
from .results import EvalResult, OptimizeResult, Outcome, new_step_record
from .runs import (
    CONFIG,
    RunDir,
    collect_secrets,
    note_resume,
    plan_run,
    state_hash,
)
from .sampling import minibatch
from .search import propose_merge
from .usage import Meters, as_budget, engines_in, over_budget
from .validation import ProposalScorer

__all__ = ["EvalResult", "OptimizeResult", "Outcome", "Trainer", "evaluate", "optimize"]

Proposal = tuple[Any, dict[str, Any], Candidate]  # (step result, proposed values, candidate)


class Trainer:
    """Configure an optimization run; :meth:`fit` runs it. ``optimize()`` is the shortcut.

    Takes the options of :class:`~tracegrad.train.options.TrainOptions` as keywords.
    """

    def __init__(self, program: Callable[..., Any], train: Any, val: Any = None,
                 **options: Any) -> None:
        # an optimizer's own search settings (reflect: Pareto, beam, merge), unless given
        self.opts = o = TrainOptions(**{**search_defaults(options.get("optimizer", "tgd")),
                                        **options})
        # Data first: a broken file must stop the run before any engine is touched.
        self.train = load_dataset(train, o.input_fields, o.output_field)
        self.val = load_dataset(val, o.input_fields, o.output_field) if val is not None else None
        self.metric = get_metric(o.metric)
        self.metric_name = getattr(o.metric, "__name__", None) or str(o.metric)
        self.program = program
        per_epoch = math.ceil(len(self.train) / o.batch_size)
        self.steps = o.epochs * per_epoch if o.epochs is not None else o.steps
        self.budget = as_budget(o.budget)
        self.named = named_parameters(program, o.parameters, o.optimizer)
        self.optimizer_engine = o.optimizer_engine or get_backward_llm(required=False) or o.engine
        trainable = [p for p in self.named.values() if p.requires_grad]
        self.optimizer = build_optimizer(o.optimizer, trainable, engine=self.optimizer_engine,
                                         max_concurrency=o.concurrency)
        give_task(self.optimizer, o.task, program, self.metric_name)
        self.optimizer_name = o.optimizer if isinstance(o.optimizer, str) else type(
            o.optimizer).__name__
        self.plan = plan_run(o.run_dir, o.resume)

    # -- setup ---------------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        """The parameters' current values by name (what a candidate's ``state`` holds)."""
        return {name: p.value for name, p in self.named.items()}

    def load_values(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            if name in self.named:
                self.named[name].value = value

    state, load = values, load_values  # the 0.1 names, beside Optimizer.state_dict()

    def _engines(self) -> list[Any]:
        found: list[Any] = []
        try:  # an optimizer's engine property may raise when no backward engine is set
            opt_engine = getattr(self.optimizer, "engine", None)
        except Exception:  # noqa: BLE001
            opt_engine = None
        for e in [
            self.opts.engine,
            self.optimizer_engine,
            opt_engine,
            get_backward_llm(required=False),
            *engines_in(self.program),
            *engines_in(getattr(self.metric, "wrapped", None)),
        ]:
            if e is not None and all(e is not f for f in found):
                found.append(e)
        return found

    def _config(self) -> dict[str, Any]:
        return run_config(self)

    def _score_note(self, split: str, notes: list[Any]) -> str:
        return score_note(split, notes, self.opts.feedback_limit // 2)

    # -- usage ------------------------------------------------------------------------
    def _usage(self) -> dict[str, Any]:
        """Usage of this run so far, including what was spent before a resume."""
        return self.meters.usage_since(self._usage_start, self._prior_usage)

    def _check_budget(self) -> None:
        # one meter enforces the budget itself; several each enforce it alone, so the
        # run checks their sum between steps
        if self.budget is None or len(self.meters.meters) < 2:
            return
        if over_budget(self._usage()["total"], self.budget):
            raise BudgetStop("the run's total usage reached the budget")

    # -- files ------------------------------------------------------------------------
    def _state_doc(self, stopped: str | None) -> dict[str, Any]:
        return state_doc(self, stopped)

    def _save(self) -> None:
        if self.ckpt.rd is not None:
            self.ckpt.save(self._state_doc(None))
            split = "val" if self.val is not None else "train-minibatch"
            self.ckpt.save_best(self.pool.best(), self.baseline.get("score"), split)

    def _metric_calls(self) -> int:
        """Examples scored in this run, resumes included (GEPA's rollouts)."""
        return self.metric_calls_before + self.runner.calls

    def _elapsed(self) -> float:
        return self._elapsed_before + (time.perf_counter() - self._t0)

    # -- run ----------------------------------------------------------------------------
    def fit(self) -> OptimizeResult:
        self._start()
        stopped = "steps"
        notes: list[str] = []
        if self.budget is not None:
            notes = self.meters.attach(self.budget, self._prior_usage.get("total", {}))
            for n in notes:
                warnings.warn(n, stacklevel=3)
        self.runner.observer = self.progress = Progress(self.opts.progress, self.steps, self._usage)
        ctx = (
            backward_llm(self.optimizer_engine)
            if self.optimizer_engine is not None
            else contextlib.nullcontext()
        )
        try:
            with ctx, telemetry.operation("optimize", span_attributes(self)):  # the root span
                c0 = self.pool.entries[0]
                if self.val is not None and c0["score"] is None and self.step_done == 0:
                    self._baseline()
                stopped = self._loop(notes)
        except KeyboardInterrupt:
            self._finish("interrupted")
            raise
        except BaseException as e:
            if not is_budget_error(e):
                self._finish(f"error: {type(e).__name__}: {shorten(str(e), 200)}")
                raise
            # a server that reported more than it was allowed is not a budget to raise
            stopped = "usage_overrun" if getattr(e, "kind", "") == "overrun" else "budget"
            self.progress.message(f"{stopped.replace('_', ' ')}: {e}")
        return self._finish(stopped)

    def _start(self) -> None:
        """A fresh run's first files, or a stopped run's state read back."""
        self._t0 = time.perf_counter()
        self._elapsed_before = 0.0
        self._prior_usage: dict[str, Any] = {}
        self.meters = Meters(self._engines())
        self._usage_start = self.meters.snapshot()
        path = self.plan.path
        rd = RunDir(path, collect_secrets(*self._engines())) if path is not None else None
        self.ckpt = Checkpoint(rd)
        self.runner = Runner(self.program, self.metric, self.metric_name, self.opts.concurrency,
                             batch=self.opts.batch_eval, run_dir=path)
        self.scores = ScoreCache(self.runner)
        self.history: list[dict[str, Any]] = []
        self.baseline: dict[str, Any] = {}
        self.baseline_recorded = False
        self.no_improve = 0
        self.step_done = 0
        self.initial = self.values()
        self.pool = Pool(self.opts.pool_size, [candidate("c0", 0, None, self.initial)],
                         keep_front=self.opts.pareto)
        self.merged: set[tuple[str, str]] = set()
        self.metric_calls_before = 0
        if self.plan.resume:
            self._restore()
        elif rd is not None:
            rd.write_json(CONFIG, self._config())

    def _restore(self) -> None:
        rd = self.ckpt.rd
        assert rd is not None
        config, state = self.ckpt.read_for_resume(self.named, {"train": self.train,
                                                               "val": self.val})
        if state is not None:
            self.step_done = int(state["step"])
            self.pool = Pool(self.opts.pool_size, state["pool"], state["current"],
                             keep_front=self.opts.pareto)
            self.merged |= {tuple(p) for p in state.get("merged", [])}  # type: ignore[misc]
            self.metric_calls_before = int(state.get("metric_calls", 0))
            self.baseline = state.get("baseline") or {}
            self.baseline_recorded = bool(state.get("baseline_recorded"))
            self.no_improve = int(state.get("no_improve", 0))
            self._prior_usage = state.get("usage") or {}
            self._elapsed_before = float(state.get("elapsed_s", 0.0))
            self.optimizer.load_state_dict(state["optimizer"])
            self.load_values(self.pool.current()["state"])
            for e in self.pool.entries:  # a resumed run never re-pays for a known score
                if self.val is not None and e["scores"]:
                    for i, sc in e["scores"].items():
                        self.scores.known.setdefault((e["hash"], "val", i), (sc, ""))
            self.history = rd.truncate_history(self.step_done)
        rd.write_json(CONFIG, note_resume(config, self.step_done, self.steps))

    def _baseline(self) -> None:
        assert self.val is not None
        score, scores, notes = self.scores.score("val", list(self.val), self.values())
        c0 = self.pool.entries[0]
        c0["score"], c0["scores"] = score, scores
        self.baseline = {"score": score, "split": "val"}
        self.optimizer.record_score(score, self._score_note("val", notes))
        self.baseline_recorded = True
        self.progress.update(val=score, best=score, phase="baseline scored")
        self._save()

    def _loop(self, notes: list[str]) -> str:
        for step in range(self.step_done + 1, self.steps + 1):
            self._check_budget()
            best = self.pool.best()
            if self.val is not None and best["score"] is not None and best["score"] >= 1.0:
                return "perfect"
            if self.opts.patience is not None and self.no_improve >= self.opts.patience:
                return "patience"
            cap = self.opts.max_metric_calls
            if cap is not None and self._metric_calls() >= cap:
                return "metric_calls"
            record = self._step(step)
            if notes and step == 1:
                record["events"].extend({"event": "budget_note", "note": n} for n in notes)
            self.history.append(record)
            self.step_done = step
            if self.ckpt.rd is not None:
                self.ckpt.rd.append_history(record)  # first: resume cuts it to state.step
            self._save()
            self.progress.step_done(record)
            if self.opts.on_step is not None:
                self.opts.on_step(record)
        return "steps"

    # -- one step ---------------------------------------------------------------------
    @telemetry.traced_operation("step", lambda self, step: {"tracegrad.step": step})
    def _step(self, step: int) -> dict[str, Any]:
        t0, usage0 = time.perf_counter(), self.meters.snapshot()
        rng = random.Random(f"{self.opts.seed}:parent:{step}")
        parent = self.pool.parent(self.opts.pareto, rng)
        self.load_values(parent["state"])
        batch = minibatch(self.train, self.opts.batch_size, self.opts.seed, step)
        best_before = self.pool.best()["score"]
        rec = new_step_record(step, parent, batch)

        def close(result: str, reason: str) -> dict[str, Any]:
            return self._close(rec, result, reason, t0, usage0, best_before)

        self.progress.update(step=step, phase="forward")
        outcomes, parent_mb = self._forward(parent, batch, rec)
        offer_successes(outcomes)  # correct examples become candidate demos
        failures = [o for o in outcomes if o.score < 1.0]
        rec["feedback"] = [o.feedback() for o in failures]
        if not failures:
            return close("skipped", "every minibatch example is already correct")
        observe = getattr(self.optimizer, "observe", None)
        if callable(observe):
            observe([Evidence(o.example.inputs, o.example.expected, o.output, o.score,
                              o.explanation, o.example.id, step_io(o.output_var))
                     for o in outcomes])
        self.progress.update(phase="backward")
        self.optimizer.zero_grad()
        if getattr(self.optimizer, "needs_backward", True):
            self._backward(outcomes, failures, step, rec)
        self.progress.update(phase="step")
        proposals = self._propose(step, parent, rec)
        if self.opts.merge:
            proposals += self._merge(step, rec)
        if not proposals:
            rejected = [e for e in rec["events"] if e.get("event") in REJECTIONS]
            if rejected:  # it proposed something, and the proposal was thrown away
                return close("rejected", "; ".join(dict.fromkeys(
                    f"{e.get('param') or e.get('name') or ''}: {e.get('detail', '')}".lstrip(": ")
                    for e in rejected)))
            return close("unchanged", "the optimizer proposed no change")
        self.progress.update(phase="validate")
        (_, cand_state, cand), verdict = self._gate(parent, parent_mb, batch, proposals, rec)
        rec["proposed"] = {k: v for k, v in cand_state.items() if parent["state"].get(k) != v}
        rec["candidate"] = cand["id"]
        if not verdict.accepted:
            self.load_values(parent["state"])
            rec["reverted"] = True
            return close("reverted", verdict.reason)
        self.load_values(cand_state)
        self.pool.current_id = cand["id"]
        self.pool.add(cand)
        rec["accepted"] = True
        return close("accepted", verdict.reason)

    def _forward(self, parent: Candidate, batch: list[Example],
                 rec: dict[str, Any]) -> tuple[list[Outcome], float]:
        """The parent on the batch, with the graph recorded for backward."""
        outcomes = self.runner.run(batch, grad=True)
        raise_if_all_crashed(outcomes)
        self.scores.add(state_hash(parent["state"]), "train", outcomes)
        parent_mb = mean(o.score for o in outcomes)
        rec["train_score"] = parent_mb
        if self.val is None and parent["score"] is None:
            parent["score"] = parent_mb
            parent["scores"] = {o.example.id: o.score for o in outcomes}
            rec["parent_score"] = parent_mb
            if parent["id"] == "c0":
                self.baseline = {"score": parent_mb, "split": "train-minibatch"}
        self.progress.update(train=parent_mb)
        loss = next((o.loss for o in outcomes if o.loss is not None), None)
        if loss is not None:
            self.ckpt.write_graph(loss)
        if not self.baseline_recorded:
            self.optimizer.record_score(
                parent["score"] if parent["score"] is not None else parent_mb,
                fail_summary((("", o.score, o.feedback()) for o in outcomes),
                             self.opts.feedback_limit),
            )
            self.baseline_recorded = True
        return outcomes, parent_mb

    def _backward(self, outcomes: list[Outcome], failures: list[Outcome], step: int,
                  rec: dict[str, Any]) -> None:
        losses = [o.loss for o in failures if o.loss is not None]
        if not losses:
            rec["events"].append({"event": "no_traceable_failure",
                                  "detail": "every failure was a crash outside the graph"})
            return
        losses += self._positives(outcomes, step)
        prop = self.optimizer.propagator() or self._default_propagator(rec)
        bres = aggregate(losses).backward(propagator=prop)
        rec["calls"]["backward"] = getattr(bres, "calls", 0)
        rec["events"].extend(getattr(bres, "events", []) or [])

    def _default_propagator(self, rec: dict[str, Any]) -> Any:
        """For an optimizer that wants feedback but names no propagator."""
        from ..backward import TextualPropagator, TracePropagator

        if self.optimizer_engine is not None or get_backward_llm(required=False) is not None:
            return TextualPropagator(engine=self.optimizer_engine,
                                     max_concurrency=self.opts.concurrency)
        rec["events"].append({
            "event": "trace_backward",
            "detail": "no backward engine: feedback was passed along the trace without LLM calls",
        })
        return TracePropagator()

    def _positives(self, outcomes: list[Outcome], step: int) -> list[Variable]:
        rng = random.Random(f"{self.opts.seed}:positive:{step}")
        return positive_losses(outcomes, self.opts.positive_examples, rng)

    def _call_step(self, j: int, step: int) -> Any:
        fn, accepts = self.optimizer.step, False
        with contextlib.suppress(TypeError, ValueError):  # a builtin without a signature
            accepts = j > 0 and "sample_id" in inspect.signature(fn).parameters
        return fn(sample_id=f"{self.opts.seed}:{step}:{j}") if accepts else fn()

    def _propose(self, step: int, parent: Candidate, rec: dict[str, Any]) -> list[Proposal]:
        proposals: list[Proposal] = []
        # a value already in the pool never takes a second slot; one that was scored and
        # reverted is gated again from the score cache, at no cost
        seen = {e["hash"] for e in self.pool.entries}
        beam = self.opts.beam
        for j in range(beam):
            res = self._call_step(j, step)
            rec["calls"]["optimizer"] += int(getattr(res, "calls", 0) or 0)
            rec["events"].extend(list(getattr(res, "events", []) or []))
            if not getattr(res, "updated", None):
                continue
            cand_state = self.values()
            # Back to the parent without calling revert(): an optimizer may treat revert()
            # as "this proposal was rejected", which is only known after the gate.
            self.load_values(parent["state"])
            h = state_hash(cand_state)
            if h in seen:
                self._revert(res, cand_state, parent["state"])
                rec["events"].append({"event": "duplicate_proposal", "beam": j})
                continue
            seen.add(h)
            cid = f"c{step}" if beam == 1 else f"c{step}.{j}"
            proposals.append((res, cand_state, candidate(cid, step, parent["id"], cand_state)))
        rng = random.Random(f"{self.opts.seed}:demos:{step}")
        return proposals + propose_demos(self.named, parent, step, seen, rng, rec["events"])

    def _merge(self, step: int, rec: dict[str, Any]) -> list[Proposal]:
        rng = random.Random(f"{self.opts.seed}:merge:{step}")
        m = propose_merge(self.pool, self.optimizer, self.named, self.initial, step, self.merged,
                          {e["hash"] for e in self.pool.entries}, rng,
                          sample_id=f"{self.opts.seed}:{step}:merge")
        if m is None:
            return []
        rec["calls"]["optimizer"] += m[0].calls
        rec["events"].extend(m[0].events)
        return [m]

    def _revert(self, res: Any, cand_state: dict[str, Any], parent_state: dict[str, Any]) -> None:
        """Undo a rejected proposal the optimizer's way, from the values it proposed."""
        self.load_values(cand_state)
        revert = getattr(res, "revert", None)
        if callable(revert):
            revert()
        self.load_values(parent_state)  # also undoes anything a partial revert missed

    def _gate(self, parent: Candidate, parent_mb: float, batch: list[Example],
              proposals: list[Proposal], rec: dict[str, Any]) -> tuple[Proposal, Verdict]:
        """Score every proposal, keep the best if the gate accepts it, revert the rest."""
        evaluated, beam_log = [], []
        scorer = ProposalScorer(self.scores, self.val, self.opts, self.load_values, parent,
                                parent_mb, batch)
        for res, cand_state, cand in proposals:
            info: dict[str, Any] = {"candidate": cand["id"]}
            evaluated.append((res, cand_state, cand, *scorer.score(cand_state, cand, info)))
            beam_log.append(info)
        self.load_values(parent["state"])
        if len(proposals) > 1:
            rec["beam"] = beam_log
        ranked = [e for e in evaluated if e[4] is not None]
        pick = (max(ranked, key=lambda e: e[4]) if ranked
                else max(evaluated, key=lambda e: e[3] if e[3] is not None else -1))
        res, cand_state, cand, mb, score, _, _ = pick
        rec["candidate_train_score"] = mb
        rec["val_score"] = score if self.val is not None else None
        base = parent["score"] if parent["score"] is not None else parent_mb
        where = "val" if self.val is not None else "minibatch"
        cut = beam_log[evaluated.index(pick)].get("val_stopped_after")
        verdict = decide(self.opts.gate, where, base, score, parent_mb, mb,
                         (cut, len(self.val or [])) if cut else None)
        for r, cs, c, m, s, n, split in evaluated:
            self.load_values(cs)
            won = c is cand and verdict.accepted
            why = verdict.reason if c is cand else "another proposal scored higher"
            sc = s if s is not None else (m if m is not None else 0.0)
            note = f"{'accepted' if won else 'reverted'}: {why}\n{self._score_note(split, n)}"
            self.optimizer.record_score(sc, shorten(note, self.opts.feedback_limit))
            if not won:
                self._revert(r, cs, parent["state"])
                if self.opts.pareto and split == "val" and self.pool.offer(c):
                    rec["events"].append({"event": "kept_on_front", "candidate": c["id"]})
        self.load_values(parent["state"])
        return (res, cand_state, cand), verdict

    def _close(self, rec: dict[str, Any], result: str, reason: str, t0: float,
               usage0: dict[str, Any], best_before: float | None) -> dict[str, Any]:
        best = self.pool.best()
        improved = best["score"] is not None and (
            best_before is None or best["score"] > best_before
        )
        self.no_improve = 0 if improved else self.no_improve + 1
        rec["result"], rec["reason"] = result, reason
        rec["values"] = self.values()
        rec["best_score"] = best["score"]
        rec["best"] = best["id"]
        rec["best_values"] = dict(best["state"])  # the best need not be the current values
        rec["usage"] = Meters.delta(self.meters.snapshot(), usage0)
        rec["cost_usd"] = rec["usage"]["total"].get("usd", 0.0)
        rec["usage_total"] = self._usage()
        rec["elapsed_s"] = round(time.perf_counter() - t0, 3)
        self.progress.update(val=rec.get("val_score"), best=best["score"], phase=result,
                             usage=rec["usage_total"])
        return rec

    def _finish(self, stopped: str) -> OptimizeResult:
        # wait for calls still in flight *before* lifting the run's budget from the meters,
        # or a worker that was mid-example when the budget ran out sends one more call
        with contextlib.suppress(Exception):
            self.runner.close()
        self.meters.detach()
        best = self.pool.best()
        self.load_values(best["state"])
        with contextlib.suppress(Exception):
            self.progress.close()
        self.ckpt.save_examples(self.scores.outcomes, best, self.val, self.train, self.program)
        if self.ckpt.rd is not None:
            self.ckpt.mark_stopped(stopped, self.step_done, lambda: self._state_doc(stopped),
                                   self._usage(), self._elapsed())
            self.ckpt.save_best(best, self.baseline.get("score"),
                                "val" if self.val is not None else "train-minibatch")
        current = next((e for e in self.pool.entries if e["id"] == self.pool.current_id), best)
        return OptimizeResult(
            best_state=dict(best["state"]),
            best_score=best["score"],
            baseline_score=self.baseline.get("score"),
            final_score=current["score"],
            history=list(self.history),
            run_dir=self.ckpt.rd.path if self.ckpt.rd is not None else None,
            usage=self._usage(),
            stopped_reason=stopped,
            steps_done=self.step_done,
        )


def optimize(program: Callable[..., Any], train: Any, val: Any = None,
             **options: Any) -> OptimizeResult:
    """Optimize ``program``'s parameters on ``train``, gated by ``val``; see the module doc.

    ``program`` is a ``tg.Module`` or any callable ``f(**example.inputs) -> Variable``
    (then pass ``parameters=``); ``train``/``val`` are dataset paths, lists of dicts or
    :class:`Dataset`; ``metric=`` is required. The parameters end at the best candidate
    found. Every option, with its meaning: :class:`~tracegrad.train.options.TrainOptions`.
    """
    return Trainer(program, train, val, **options).fit()


optimize.__signature__ = signature_with_options(optimize, 3)  # type: ignore[attr-defined]
Trainer.__init__.__signature__ = signature_with_options(  # type: ignore[attr-defined]
    Trainer.__init__, 4)
