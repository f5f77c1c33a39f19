"""DSPy peer runner: GEPA or MIPROv2 on a benchmark split, run in the peers' venv.

    PEERS_PYTHON benchmarks/real/peer_dspy.py --optimizer gepa --config CFG.json --out RES.json

``run.py`` writes the configuration (see ``peer_common``) and reads the result; this file
imports dspy, never tracegrad. How DSPy is used (from the installed package's source and
docstrings, dspy 3.4):

* program: one ``dspy.Predict`` (or ``dspy.ChainOfThought`` with ``options.dspy_module =
  "cot"``) over the signature ``question -> answer`` whose instructions are the task's
  description -- the same single prompt the other frameworks optimize;
* models: ``dspy.LM("openai/<model>", api_base=...)`` for the task and for the
  reflection/proposal model; DSPy's disk cache is off and its memory cache on, so a run
  starts cold and repeated identical requests inside it are free, as in tracegrad;
* counting: every LM call lands in ``LM.update_history``; a subclass records its usage
  (copies of an LM keep the subclass, so MIPRO's and GEPA's copies are counted too);
  cache hits come back with empty usage and count as cached calls;
* GEPA: ``dspy.GEPA(metric, max_metric_calls=<budget>, reflection_lm=...,
  reflection_minibatch_size=<batch>, track_stats=True)``; the metric returns a score with
  the textual feedback; ``gepa_kwargs.stop_callbacks`` stops between iterations once the
  dollar budget is spent. ``options.gepa_auto`` ("light"...) uses GEPA's own budget instead;
* MIPROv2: ``auto=None`` with ``num_candidates`` and a ``num_trials`` chosen so that the
  planned metric calls (bootstrapping + the default program's evaluation + minibatch
  trials + periodic full evaluations) fit the budget (:func:`plan_mipro`); MIPROv2 has no
  stopping hook, so a spent dollar budget aborts it at the next LM call or rollout
  (:class:`peer_common.BudgetExhausted`) and its line has no ``test_after``.

The rollout count reported is the number of (example, program) evaluations during the
optimization: calls of the metric without ``pred_name`` (GEPA also calls the metric with
``pred_name`` set to turn an already-scored trajectory into feedback; those are not
rollouts, and GEPA's own ``total_metric_calls`` is reported beside it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peer_common as pc  # noqa: E402

MIPRO_MIN_MINIBATCH = 50  # MIPROv2 minibatches only a valset larger than this (its constant)


def plan_mipro(budget: int, n_train: int, n_val: int, *, num_candidates: int = 6,
               max_bootstrapped_demos: int = 4, minibatch_size: int = 35,
               full_eval_steps: int = 5) -> dict[str, Any]:
    """MIPROv2 settings whose planned metric calls fit ``budget``.

    Bootstrapping runs ``num_candidates + 1`` demo sets, each through the training set until
    it has its demos (planned here at twice ``max_bootstrapped_demos`` rollouts, capped by
    the set's size); then the default program is evaluated on the full valset; then each
    trial scores a minibatch, with a full evaluation every ``full_eval_steps`` trials and at
    the end (MIPROv2's schedule). Without minibatching every trial is a full evaluation.
    When even one trial does not fit, fewer candidates are planned (down to 2); a plan that
    still does not fit says so (``fits_budget``).
    """
    minibatch = n_val > MIPRO_MIN_MINIBATCH
    size = min(minibatch_size, n_val)

    def boot(n: int) -> int:
        return (n + 1) * min(n_train, 2 * max_bootstrapped_demos) if max_bootstrapped_demos \
            else 0

    def cost(n: int, trials: int) -> int:
        if not minibatch:
            return boot(n) + n_val + trials * n_val
        fulls = trials // full_eval_steps + 1 + (1 if trials % full_eval_steps else 0)
        return boot(n) + n_val + trials * size + fulls * n_val

    n = num_candidates
    while n > 2 and cost(n, 1) > budget:
        n -= 1
    trials = 1
    while cost(n, trials + 1) <= budget:
        trials += 1
    return {"num_candidates": n, "num_trials": trials, "minibatch": minibatch,
            "minibatch_size": size, "minibatch_full_eval_steps": full_eval_steps,
            "max_bootstrapped_demos": max_bootstrapped_demos,
            "planned_metric_calls": cost(n, trials), "planned_bootstrap_calls": boot(n),
            "fits_budget": cost(n, trials) <= budget}


def _lm_class(dspy: Any, meter: pc.Meter, *, hard_budget: bool) -> type:
    class MeteredLM(dspy.LM):
        """dspy.LM that tells the meter about every call it records in its history (and,
        with ``hard_budget``, stops the run once the dollars are spent)."""

        def update_history(self, entry: dict[str, Any]) -> None:
            usage = entry.get("usage") or {}
            if usage:
                meter.llm_call(self.model, usage.get("prompt_tokens"),
                               usage.get("completion_tokens"), framework_usd=entry.get("cost"))
            else:
                meter.llm_call(self.model, 0, 0, cached=True)
            super().update_history(entry)
            if hard_budget:
                meter.check_budget()

    return MeteredLM


def _make_lm(cls: type, spec: str, base_url: str | None, **kw: Any) -> Any:
    name = pc.bare_model(spec)
    args: dict[str, Any] = dict(kw)
    if base_url:
        args["api_base"] = base_url
        args["api_key"] = os.environ.get("OPENAI_API_KEY") or "sk-offline"
    return cls(f"openai/{name}", **args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--optimizer", choices=("gepa", "mipro"), required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    cfg = pc.read_config(a.config)
    res = pc.result_skeleton(cfg)
    meter = pc.Meter(cfg["prices"], cfg["budget_usd"])
    t0 = time.perf_counter()
    try:
        _run(a.optimizer, cfg, meter, res)
    except Exception as e:  # the record says what failed; run.py keeps going
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()[-4000:]
    res.update(meter.totals())
    res["wall_s"] = round(time.perf_counter() - t0, 2)
    res["versions"] = pc.versions("dspy", "gepa", "litellm", "openai", "optuna")
    pc.write_result(a.out, res)
    return 0


def _run(which: str, cfg: dict[str, Any], meter: pc.Meter, res: dict[str, Any]) -> None:
    t_import = time.perf_counter()
    import dspy

    res["import_s"] = round(time.perf_counter() - t_import, 2)
    opts = cfg.get("options") or {}
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    # GEPA stops between iterations on its own (a stop callback); MIPROv2 has no such hook,
    # so its calls stop it as soon as the dollar budget is spent, proposals included
    lm_cls = _lm_class(dspy, meter, hard_budget=which == "mipro")
    task_lm = _make_lm(lm_cls, cfg["model"], cfg["base_url"])
    refl_lm = _make_lm(lm_cls, cfg["optimizer_model"], cfg["base_url"], temperature=1.0,
                       max_tokens=int(opts.get("reflection_max_tokens", 8000)))
    dspy.configure(lm=task_lm, max_history_size=100)

    sig = dspy.Signature("question -> answer", instructions=cfg["instruction"])
    program = dspy.ChainOfThought(sig) if opts.get("dspy_module") == "cot" else dspy.Predict(sig)

    def examples(rows: list[dict[str, str]]) -> list[Any]:
        return [dspy.Example(question=r["question"], answer=r["answer"]).with_inputs("question")
                for r in rows]

    train, val, test = (examples(cfg[k]) for k in ("train", "val", "test"))
    score_fn = pc.METRICS[cfg["metric"]]
    threads = int(cfg["num_threads"])

    def judge(gold: Any, pred: Any) -> tuple[float, str]:
        return score_fn(getattr(pred, "answer", "") or "", gold.answer)

    def plain_metric(gold: Any, pred: Any, trace: Any = None) -> float:
        meter.check_budget()
        meter.rollout()
        return judge(gold, pred)[0]

    def evaluate(prog: Any, rows: list[Any], phase: str) -> float:
        before = meter.phase
        meter.phase = phase
        try:
            ev = dspy.Evaluate(devset=rows, metric=plain_metric, num_threads=threads,
                               display_progress=False, display_table=False)
            return float(ev(prog).score) / 100.0
        finally:
            meter.phase = before

    budget = int(cfg["metric_budget"])
    res["settings"] = {"optimizer": which, "dspy_module": opts.get("dspy_module", "predict"),
                       "metric_budget": budget, "num_threads": threads}
    meter.phase = "eval"
    res["test_before"] = evaluate(program, test, "eval")
    meter.phase = "optimize"
    t_opt = time.perf_counter()
    if which == "gepa":
        optimized = _gepa(dspy, program, train, val, cfg, opts, meter, res, judge, refl_lm,
                          budget, threads)
    else:
        optimized = _mipro(dspy, program, train, val, cfg, meter, res, plain_metric, task_lm,
                           refl_lm, budget, threads)
    res["optimize_s"] = round(time.perf_counter() - t_opt, 2)
    if optimized is None:
        return
    res["final_instruction"] = optimized.predictors()[0].signature.instructions
    res["test_after"] = evaluate(optimized, test, "eval")


def _gepa(dspy: Any, program: Any, train: list, val: list, cfg: dict[str, Any],
          opts: dict[str, Any], meter: pc.Meter, res: dict[str, Any], judge: Any,
          refl_lm: Any, budget: int, threads: int) -> Any:
    def metric(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None,
               pred_trace: Any = None) -> Any:
        if pred_name is None:  # a rollout being scored; with pred_name: feedback on one
            meter.rollout()
        score, feedback = judge(gold, pred)
        return dspy.Prediction(score=score, feedback=feedback)

    def spent(_state: Any) -> bool:
        if meter.over_budget():
            res["stopped_reason"] = "budget_usd"
            return True
        return False

    auto = opts.get("gepa_auto")
    budget_kw: dict[str, Any] = {"auto": auto} if auto else {"max_metric_calls": budget}
    gepa = dspy.GEPA(metric=metric, reflection_lm=refl_lm,
                     reflection_minibatch_size=int(cfg["batch_size"]), num_threads=threads,
                     track_stats=True, seed=int(cfg["seed"]),
                     log_dir=str(Path(cfg["workdir"]) / "gepa"),
                     gepa_kwargs={"stop_callbacks": [spent]}, **budget_kw)
    optimized = gepa.compile(program, trainset=train, valset=val)
    d = optimized.detailed_results
    scores = list(d.val_aggregate_scores)
    res["val_before"], res["val_best"] = scores[0], max(scores)
    res["gepa"] = {"total_metric_calls": d.total_metric_calls, "candidates": len(scores),
                   "num_full_val_evals": d.num_full_val_evals,
                   "max_metric_calls": gepa.max_metric_calls}
    res["settings"].update({"auto": auto, "max_metric_calls": gepa.max_metric_calls,
                            "reflection_minibatch_size": int(cfg["batch_size"]),
                            "use_merge": True})
    res["stopped_reason"] = res["stopped_reason"] or "metric_budget"
    return optimized


def _mipro(dspy: Any, program: Any, train: list, val: list, cfg: dict[str, Any],
           meter: pc.Meter, res: dict[str, Any], metric: Any, task_lm: Any, refl_lm: Any,
           budget: int, threads: int) -> Any:
    opts = cfg.get("options") or {}
    plan = plan_mipro(budget, len(train), len(val),
                      num_candidates=int(opts.get("mipro_candidates", 6)))
    res["settings"].update({"mipro": plan})
    mipro = dspy.MIPROv2(metric=metric, prompt_model=refl_lm, task_model=task_lm, auto=None,
                         num_candidates=plan["num_candidates"], num_threads=threads,
                         max_bootstrapped_demos=plan["max_bootstrapped_demos"],
                         seed=int(cfg["seed"]) or 9, verbose=False)
    try:
        optimized = mipro.compile(program, trainset=train, valset=val,
                                  num_trials=plan["num_trials"], minibatch=plan["minibatch"],
                                  minibatch_size=plan["minibatch_size"],
                                  minibatch_full_eval_steps=plan["minibatch_full_eval_steps"])
    except pc.BudgetExhausted as e:
        res["stopped_reason"] = f"budget_usd: MIPROv2 aborted ({e}); it has no stopping hook"
        return None
    trials = getattr(optimized, "trial_logs", None) or {}
    fulls = [t.get("full_eval_score") for t in trials.values() if t.get("full_eval_score")
             is not None]
    if fulls:
        res["val_before"], res["val_best"] = fulls[0] / 100.0 if fulls[0] > 1 else fulls[0], \
            max(fulls) / 100.0 if max(fulls) > 1 else max(fulls)
    demos = sum(len(p.demos) for p in optimized.predictors())
    res["settings"]["demos_in_result"] = demos
    res["stopped_reason"] = "trials"
    return optimized


if __name__ == "__main__":
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    raise SystemExit(main())
