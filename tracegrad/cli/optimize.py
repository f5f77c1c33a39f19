"""``tracegrad optimize``: run the library's training loop on a prompt file."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._shared import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    BaseUrlOpt,
    BatchOpt,
    BatchPollOpt,
    CLIError,
    ConcurrencyOpt,
    JsonOpt,
    ModelOpt,
    NoCacheOpt,
    OptimizerModelOpt,
    OptimizerOpt,
    PromptArg,
    RetriesOpt,
    StepsOpt,
    TimeoutOpt,
    _batch_options,
    _check_optimizer,
    _diff,
    _engine,
    _errors,
    _escape,
    _finite,
    _load_data,
    _load_prompt,
    _log,
    _out,
    _out_json,
    _plural,
    _resolve_models,
    _usage_totals,
    app,
)

if TYPE_CHECKING:
    from ..promptfile import PromptFile

# -- optimize -------------------------------------------------------------------------------


@app.command(no_args_is_help=True)
def optimize(
    prompt_file: PromptArg,
    train: Annotated[Path, typer.Option("--train", "-t", help="Training data (.jsonl, .csv, "
                                        ".json) with the input fields and the output field.",
                                        show_default=False)],
    val: Annotated[Path | None, typer.Option("--val", help="Validation data: a rewrite "
                                             "is kept only if it does not score worse here "
                                             "(default: it is checked on the training "
                                             "minibatch).")] = None,
    steps: StepsOpt = 8,
    batch_size: BatchOpt = 4,
    optimizer: OptimizerOpt = "tgd",
    model: ModelOpt = None,
    optimizer_model: OptimizerModelOpt = None,
    base_url: BaseUrlOpt = None,
    budget_usd: Annotated[float | None, typer.Option("--budget-usd", min=0.0, callback=_finite, help="Stop before "
                                                     "spending more than this many dollars "
                                                     "(all models together).")] = None,
    concurrency: ConcurrencyOpt = 32,
    no_cache: NoCacheOpt = False,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue the run saved in "
                                                "this run directory.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the optimized prompt file here "
                                             "and leave PROMPT_FILE untouched.")] = None,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Where to keep the run "
                                                 "(default: tracegrad-runs/NAME-TIME).")] = None,
    json_output: JsonOpt = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed for shuffling and sampling.")] = 0,
    timeout: TimeoutOpt = 60.0,
    max_retries: RetriesOpt = 4,
    max_metric_calls: Annotated[int | None, typer.Option(
        "--max-metric-calls", min=1, help="Stop once this many examples have been scored "
        "(rollouts, GEPA's budget unit), checked between steps.")] = None,
    beam: Annotated[int | None, typer.Option(
        "--beam", min=1, help="Proposals per step, each checked before the best is kept "
        "(default: 2 for reflect, else 1).")] = None,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No live progress on stderr (the summary still goes to "
        "stdout).")] = False,
    batch_eval: Annotated[bool, typer.Option(
        "--batch-eval", metavar=" ", help="Send the baseline and full validations through the provider's "
        "Batch API (half price; each takes up to the provider's window, typically within "
        "24 h). Minibatches, feedback and rewrites stay live.")] = False,
    batch_poll: BatchPollOpt = 5.0,
) -> None:
    """Optimize the template of a prompt file on a dataset, and write the best one back.

    Everything (prompt file, datasets, metric, options, API key) is checked before the
    first call. The best template replaces the file's body (front matter kept byte for
    byte; the previous version is kept as NAME.prompt.bak), or goes to --out. A run
    directory records every step; `tracegrad report RUN_DIR` renders it.

    Example:

        tracegrad optimize prompts/object_counting.prompt --train prompts/object_counting.train.jsonl --val prompts/object_counting.val.jsonl --steps 8 --budget-usd 1 --out optimized.prompt
    """
    with _errors():
        _optimize(prompt_file, train, val, steps, batch_size, optimizer, model, optimizer_model,
                  base_url, budget_usd, concurrency, no_cache, resume, out, run_dir,
                  json_output, seed, {"timeout": timeout, "max_retries": max_retries},
                  {k: v for k, v in (("max_metric_calls", max_metric_calls), ("beam", beam),
                                     ("batch_eval", _batch_options(None, batch_poll)
                                      if batch_eval else None))
                   if v is not None} | {"progress": not quiet})


def _default_run_dir(pf: PromptFile) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("tracegrad-runs") / f"{pf.name}-{stamp}"
    p, i = base, 1
    while p.exists():
        i += 1
        p = base.with_name(f"{base.name}-{i}")
    return p


def _optimize(prompt_file: Path, train_path: Path, val_path: Path | None, steps: int,
              batch_size: int, optimizer: str, model: str | None, optimizer_model: str | None,
              base_url: str | None, budget_usd: float | None, concurrency: int, no_cache: bool,
              resume: Path | None, out: Path | None, run_dir: Path | None, json_output: bool,
              seed: int, net: dict[str, Any], search: dict[str, Any]) -> None:
    from ..llm.meter import Budget
    from ..train.trainer import Trainer

    # 1. everything is validated, and every engine built, before anything is written
    optimizer = _check_optimizer(optimizer)
    pf = _load_prompt(prompt_file)
    train = _load_data(pf, train_path, "--train")
    val = _load_data(pf, val_path, "--val")
    m, om = _resolve_models(pf, model, optimizer_model)
    _check_out(out)
    run_dir, resume = _plan_run_dir(pf, run_dir, resume)
    calls = run_dir / "calls.jsonl"  # every request and reply, keys redacted
    engine = _engine(m, base_url=base_url, no_cache=no_cache, concurrency=concurrency,
                     call_log=calls, **net)
    opt_engine = engine if om == m else _engine(om, base_url=base_url, no_cache=no_cache,
                                                concurrency=concurrency, meter=engine,
                                                call_log=calls, **net)
    try:
        trainer = Trainer(
            pf.to_module(engine), train, val, metric=pf.metric_fn(judge_engine=opt_engine),
            optimizer=optimizer, steps=steps, batch_size=batch_size,
            budget=Budget(usd=budget_usd) if budget_usd is not None else None, engine=engine,
            optimizer_engine=opt_engine, run_dir=run_dir, resume=resume, seed=seed, **search,
            concurrency=concurrency,
            config={"prompt_file": str(prompt_file), "cli": True},
        )
    except (OSError, ValueError) as e:
        raise CLIError(str(e)) from None

    # 2. run
    if val is None:
        _log("[yellow]note:[/yellow] no --val given: candidates are checked on the training "
             "minibatch, so scores are noisier; pass --val for a held-out score.")
    what = "resuming" if resume is not None else "optimizing"
    _log(f"{what} [bold]{_escape(str(prompt_file))}[/bold] with {optimizer}: {_plural(steps, 'step')} x "
         f"{_plural(batch_size, 'example')}, model {_escape(m)}, optimizer model {_escape(om)}")
    _log(f"run dir: {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume is None:
        shutil.copyfile(prompt_file, run_dir / "original.prompt")
    result = _fit(trainer, run_dir)
    _batch_summary(trainer.runner.batch_reports)

    # 3. write the best template back
    _finish(pf, prompt_file, out, result, json_output, m, om, optimizer)


def _batch_summary(reports: list[dict[str, Any]]) -> None:
    """With --batch-eval: what the evaluations sent through the Batch API (on stderr)."""
    if not reports:
        return
    total = {k: sum(int(r.get(k, 0)) for r in reports)
             for k in ("lines", "batches_submitted", "failed_lines", "retried_live")}
    _log(f"batch: {len(reports)} evaluations, {total['lines']} requests in "
         f"{total['batches_submitted']} batches, {total['failed_lines']} failed lines "
         f"({total['retried_live']} retried live)")


def _check_out(out: Path | None) -> None:
    if out is None:
        return
    if out.exists() and out.is_dir():
        raise CLIError(f"--out {out} is a directory; give a file path")
    if not out.parent.exists():
        raise CLIError(f"--out {out}: the directory {out.parent} does not exist")


def _plan_run_dir(pf: PromptFile, run_dir: Path | None,
                  resume: Path | None) -> tuple[Path, Path | None]:
    """The run directory and whether it is resumed (the policy is the library's)."""
    from ..train.runs import plan_run

    try:
        plan = plan_run(run_dir, resume, _default_run_dir(pf), flags=("--resume", "--run-dir"))
    except (OSError, ValueError) as e:  # not a run directory, holds a run, a file...
        raise CLIError(str(e)) from None
    if plan.note:
        _log(f"[yellow]note:[/yellow] {_escape(plan.note)}")
    assert plan.path is not None
    return plan.path, plan.path if plan.resume else None


def _fit(trainer: Any, run_dir: Path) -> Any:
    """Run, and say how to continue when the run stops before its end."""
    from ..llm.base import ConfigurationError, LLMError
    from ..llm.meter import BudgetExceeded

    # the same options matter (--base-url, --model, --steps...), so no command is spelled out
    resume_cmd = f"the same command with --resume {run_dir}"
    try:
        return trainer.fit()
    except KeyboardInterrupt:
        _log(f"[yellow]interrupted[/yellow]: the run is saved in {_escape(str(run_dir))}; "
             f"continue it with {_escape(resume_cmd)}")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except RuntimeError as e:  # e.g. every example failed: the server is down or misnamed
        raise CLIError(f"{e} -- check --model, --base-url and the server (the run so far is "
                       f"in {run_dir}; continue it with: {resume_cmd})", EXIT_FAILURE) from None
    except LLMError as e:  # the server failed mid-run: retries exhausted, connection lost...
        if isinstance(e, BudgetExceeded | ConfigurationError):
            raise
        raise CLIError(f"{e} -- check --model, --base-url and the server; the run so far is "
                       f"saved in {run_dir}, continue it with: {resume_cmd}",
                       EXIT_FAILURE) from None
    except (FileExistsError, ValueError) as e:  # e.g. resuming with different data
        raise CLIError(str(e)) from None


def _finish(pf: PromptFile, prompt_file: Path, out: Path | None, result: Any, json_output: bool,
            model: str, optimizer_model: str, optimizer: str) -> None:
    from ..train.report import write_report
    from ..writeback import NothingLearned, write_back

    run_dir = Path(result.run_dir)
    try:
        wb = write_back(pf, prompt_file, out, result)
    except NothingLearned as e:
        with contextlib.suppress(Exception):
            write_report(run_dir)
        raise CLIError(f"{e}; raise --budget-usd (see `tracegrad estimate`)",
                       EXIT_FAILURE) from None
    body, improved, written, backup = wb.body, wb.improved, wb.written, wb.backup
    report = write_report(run_dir)
    if result.stopped_reason == "usage_overrun":
        raise CLIError(f"the server reported more tokens than the limit it was sent, so the "
                       f"run stopped (the best prompt so far was kept; run dir {run_dir}); "
                       f"check the server, then continue with --resume {run_dir}", EXIT_FAILURE)
    usage = _usage_totals(result.usage)
    data = {
        "prompt_file": str(prompt_file),
        "written": str(written) if written else None,
        "backup": str(backup) if backup else None,
        "improved": bool(improved),
        "baseline_score": result.baseline_score,
        "best_score": result.best_score,
        "final_score": result.final_score,
        "steps_done": result.steps_done,
        "stopped_reason": result.stopped_reason,
        "optimizer": optimizer,
        "model": model,
        "optimizer_model": optimizer_model,
        "usage": usage,
        "run_dir": str(run_dir),
        "report": str(report),
    }
    if json_output:
        _out_json(data)
    else:
        _out(_summary_text(data))
        if improved:
            _out("")
            _out(_diff(pf.body, body, "before", "after"))
    if result.stopped_reason == "budget":
        _log("[yellow]the budget ran out[/yellow]; the best prompt found so far was kept"
             + ("" if improved else " (none beat the baseline, so the file is unchanged)"))


_WHY_STOPPED = {  # a run that ends before --steps says why (the demo does the same)
    "perfect": "the validation score reached 1.0, so there was nothing left to learn",
    "patience": "no step improved the best score for a while",
    "metric_calls": "--max-metric-calls examples were scored",
    "budget": "the budget ran out",
}


def _fmt_score(x: Any) -> str:
    return "n/a" if x is None else f"{float(x):.3f}"


def _summary_text(d: dict[str, Any]) -> str:
    u = d["usage"]
    b, best = d["baseline_score"], d["best_score"]
    delta = ""
    if b is not None and best is not None:
        delta = f" ({best - b:+.3f})"
    lines = [
        f"score: {_fmt_score(b)} -> {_fmt_score(best)}{delta}  (baseline -> best, validation)",
        f"steps: {d['steps_done']} ({d['stopped_reason']}), optimizer {d['optimizer']}"
        + (f" -- stopped early: {_WHY_STOPPED[d['stopped_reason']]}"
           if d["stopped_reason"] in _WHY_STOPPED else ""),
        f"calls: {u['calls']} ({u['cached_calls']} from cache)  tokens: {u['total_tokens']:,}  "
        f"cost: ${u['usd']:.4f}",
    ]
    if d["written"]:
        kept = f" (previous version: {d['backup']})" if d["backup"] else ""
        lines.append(f"prompt written: {d['written']}{kept}")
    else:
        lines.append(f"prompt file unchanged: no candidate beat the baseline ({d['prompt_file']})")
    lines.append(f"run dir: {d['run_dir']}")
    lines.append(f"report: {d['report']}")
    return "\n".join(lines)
