"""The ``tracegrad`` command: optimize a prompt file without writing Python.

Results go to stdout (one JSON object with ``--json``); progress and logs go to stderr.
Exit codes: 0 success (also a run stopped by its budget: the best prompt found is saved),
1 runtime failure (LLM/server errors, a budget too small to finish the baseline),
2 usage or input error (bad prompt file, dataset or option), 130 interrupted (Ctrl-C; the
run directory is saved and can be resumed with ``--resume``).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from .promptfile import PromptFile, PromptFileError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

app = typer.Typer(
    name="tracegrad",
    help="Optimize LLM prompts and pipelines with textual gradients.\n\n"
    "Start with `tracegrad demo` (offline, simulated), then `tracegrad estimate` and "
    "`tracegrad optimize` on a prompt file from prompts/.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
cache_app = typer.Typer(
    help="Inspect or clear the reply cache (a SQLite file shared by all runs).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(cache_app, name="cache")


class CLIError(Exception):
    """An expected failure: printed as one line, exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


# -- output ----------------------------------------------------------------------------


def _err() -> Console:
    # made per call: tests and embedders swap sys.stderr
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _log(message: str) -> None:
    _err().print(message)


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _out_json(data: dict[str, Any]) -> None:
    _out(json.dumps(data, ensure_ascii=False, default=str))


def _redact(text: str) -> str:
    from .llm.calllog import redact

    return redact(text)


def _fail(message: str, code: int) -> typer.Exit:
    _err().print(f"[bold red]error:[/bold red] {_escape(_redact(message))}")
    return typer.Exit(code)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Turn every expected error into a one-line message and an exit code."""
    from .llm.base import ConfigurationError, LLMError
    from .llm.meter import BudgetExceeded
    from .sandbox import SandboxUnavailable
    from .template import TemplateError
    from .train.data import DatasetError
    from .train.runs import RunDirError

    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except KeyboardInterrupt:
        raise _fail("interrupted", EXIT_INTERRUPTED) from None
    except CLIError as e:
        raise _fail(str(e), e.code) from None
    except (PromptFileError, DatasetError, TemplateError, RunDirError) as e:
        raise _fail(str(e), EXIT_USAGE) from None
    except ConfigurationError as e:
        raise _fail(str(e), EXIT_USAGE) from None
    except SandboxUnavailable as e:  # a machine set-up problem, said in one line
        raise _fail(str(e), EXIT_USAGE) from None
    except BudgetExceeded as e:
        raise _fail(
            f"{e} -- raise --budget-usd (see `tracegrad estimate` for the expected cost)",
            EXIT_FAILURE,
        ) from None
    except LLMError as e:
        raise _fail(f"{e} (check --base-url, --model and the server)", EXIT_FAILURE) from None
    except Exception as e:  # noqa: BLE001 - never a traceback for the user...
        if os.environ.get("TRACEGRAD_DEBUG"):
            raise  # ...unless asked for one
        raise _fail(
            f"internal error: {type(e).__name__}: {e} (set TRACEGRAD_DEBUG=1 for the traceback "
            "and report it)",
            EXIT_FAILURE,
        ) from None


# -- shared option types ------------------------------------------------------------------

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model that runs the prompt, e.g. openai:gpt-4o-mini "
                 "(default: `model` in the prompt file)."),
]
OptimizerModelOpt = Annotated[
    str | None,
    typer.Option("--optimizer-model", help="Model that writes feedback and rewrites the prompt "
                 "(default: `optimizer_model` in the file, else the model)."),
]
BaseUrlOpt = Annotated[
    str | None,
    typer.Option("--base-url", help="OpenAI-compatible server, e.g. http://localhost:8000/v1 "
                 "(default: $OPENAI_BASE_URL or api.openai.com). The key comes from "
                 "$OPENAI_API_KEY.", envvar=None),
]
ConcurrencyOpt = Annotated[
    int, typer.Option("--concurrency", "-j", min=1, help="Most LLM calls in flight at once.")
]
NoCacheOpt = Annotated[
    bool, typer.Option("--no-cache", help="Do not read or write the reply cache.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", min=0.1, help="Seconds to wait for one LLM reply before "
                        "retrying it.")
]
RetriesOpt = Annotated[
    int, typer.Option("--max-retries", min=0, help="Retries of a call after a 429, 5xx, "
                      "timeout or dropped connection (exponential backoff).")
]

StepsOpt = Annotated[int, typer.Option("--steps", "-n", min=1, help="Optimization steps.")]
BatchOpt = Annotated[
    int, typer.Option("--batch-size", "-b", min=1, help="Training examples per step.")
]
OptimizerOpt = Annotated[
    str,
    typer.Option("--optimizer", "-o", help="tgd (textual gradients, per prompt), tgd-batched "
                 "(the same, with one feedback call per batch instead of one per example), "
                 "trace (whole-trace, no backward calls) or opro (scored history of "
                 "candidates)."),
]
PromptArg = Annotated[
    Path, typer.Argument(help="The prompt file: YAML front matter + a Jinja2 template.",
                         show_default=False)
]

OPTIMIZERS = ("tgd", "tgd-batched", "trace", "opro")


# -- loading --------------------------------------------------------------------------------


def _load_prompt(path: Path) -> PromptFile:
    pf = PromptFile.load(path)
    for w in pf.warnings:
        _log(f"[yellow]warning:[/yellow] {_escape(w)}")
    return pf


def _load_data(pf: PromptFile, path: Path | None, option: str) -> Any:
    if path is None:
        return None
    if not path.exists():
        raise CLIError(f"{option} {path}: no such file")
    ds = pf.load_dataset(path)
    pf.check_metric(ds, path)
    return ds


def _resolve_models(pf: PromptFile, model: str | None, optimizer_model: str | None
                    ) -> tuple[str, str]:
    m = model or pf.model
    if not m:
        raise CLIError(f"{pf.path}: no model: add 'model: openai:gpt-4o-mini' to the front "
                       "matter or pass --model")
    om = optimizer_model or pf.optimizer_model or m
    return m, om


def _engine(spec: str, *, base_url: str | None, no_cache: bool, concurrency: int,
            meter: Any = None, call_log: Path | None = None, timeout: float = 60.0,
            max_retries: int = 4) -> Any:
    from .llm.factory import LLM

    return LLM(spec, base_url=base_url, cache=not no_cache, max_concurrency=concurrency,
               meter=meter, call_log=call_log, timeout=timeout, max_retries=max_retries)


def _check_optimizer(name: str) -> str:
    n = name.strip().lower()
    if n not in OPTIMIZERS:
        near = difflib.get_close_matches(n, OPTIMIZERS, n=1)
        hint = f" -- did you mean '{near[0]}'?" if near else ""
        raise CLIError(f"--optimizer {name!r} is not one of {', '.join(OPTIMIZERS)}{hint}")
    return n


# -- optimize -------------------------------------------------------------------------------


@app.command(no_args_is_help=True)
def optimize(
    prompt_file: PromptArg,
    train: Annotated[Path, typer.Option("--train", "-t", help="Training data (.jsonl, .csv, "
                                        ".json) with the input fields and the output field.",
                                        show_default=False)],
    val: Annotated[Path | None, typer.Option("--val", "-v", help="Validation data: a rewrite "
                                             "is kept only if it does not score worse here "
                                             "(default: it is checked on the training "
                                             "minibatch).")] = None,
    steps: StepsOpt = 8,
    batch_size: BatchOpt = 4,
    optimizer: OptimizerOpt = "tgd",
    model: ModelOpt = None,
    optimizer_model: OptimizerModelOpt = None,
    base_url: BaseUrlOpt = None,
    budget_usd: Annotated[float | None, typer.Option("--budget-usd", min=0.0, help="Stop before "
                                                     "spending more than this many dollars "
                                                     "(all models together).")] = None,
    concurrency: ConcurrencyOpt = 8,
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
                  json_output, seed, {"timeout": timeout, "max_retries": max_retries})


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
              seed: int, net: dict[str, Any]) -> None:
    from .llm.meter import Budget
    from .train.trainer import Trainer

    # 1. everything is validated, and every engine built, before anything is written
    optimizer = _check_optimizer(optimizer)
    pf = _load_prompt(prompt_file)
    train = _load_data(pf, train_path, "--train")
    val = _load_data(pf, val_path, "--val")
    if val is None:
        _log("[yellow]note:[/yellow] no --val given: candidates are checked on the training "
             "minibatch, so scores are noisier; pass --val for a held-out score.")
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
            optimizer_engine=opt_engine, run_dir=run_dir, resume=resume, seed=seed,
            concurrency=concurrency, progress=True,
            config={"prompt_file": str(prompt_file), "cli": True},
        )
    except (OSError, ValueError) as e:
        raise CLIError(str(e)) from None

    # 2. run
    what = "resuming" if resume is not None else "optimizing"
    _log(f"{what} [bold]{_escape(str(prompt_file))}[/bold] with {optimizer}: {steps} steps x "
         f"{batch_size} examples, model {_escape(m)}, optimizer model {_escape(om)}")
    _log(f"run dir: {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume is None:
        shutil.copyfile(prompt_file, run_dir / "original.prompt")
    result = _fit(trainer, run_dir)

    # 3. write the best template back
    _finish(pf, prompt_file, out, result, json_output, m, om, optimizer)


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
    from .train.runs import plan_run

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
    from .llm.base import ConfigurationError, LLMError
    from .llm.meter import BudgetExceeded

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
    from .train.report import write_report
    from .writeback import NothingLearned, write_back

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


def _usage_totals(usage: Any) -> dict[str, Any]:
    from .train.usage import usage_totals

    return usage_totals(usage)


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
        f"steps: {d['steps_done']} ({d['stopped_reason']}), optimizer {d['optimizer']}",
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


def _diff(a: str, b: str, name_a: str, name_b: str) -> str:
    lines = difflib.unified_diff(a.splitlines(), b.splitlines(), name_a, name_b, lineterm="")
    return "\n".join(lines)


# -- eval -------------------------------------------------------------------------------------


@app.command(name="eval", no_args_is_help=True)
def eval_(
    prompt_file: PromptArg,
    data: Annotated[Path, typer.Option("--data", "-d", help="Dataset to score on (.jsonl, "
                                       ".csv, .json).", show_default=False)],
    model: ModelOpt = None,
    optimizer_model: OptimizerModelOpt = None,
    base_url: BaseUrlOpt = None,
    concurrency: ConcurrencyOpt = 8,
    no_cache: NoCacheOpt = False,
    show: Annotated[int, typer.Option("--show", help="How many failures to list.")] = 10,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = 60.0,
    max_retries: RetriesOpt = 4,
) -> None:
    """Score a prompt file on a dataset and list the examples it gets wrong.

    Example:

        tracegrad eval prompts/support_intent.prompt --data prompts/support_intent.val.jsonl
    """
    net = {"timeout": timeout, "max_retries": max_retries}
    with _errors():
        pf = _load_prompt(prompt_file)
        ds = _load_data(pf, data, "--data")
        m, om = _resolve_models(pf, model, optimizer_model)
        engine = _engine(m, base_url=base_url, no_cache=no_cache, concurrency=concurrency, **net)
        judge = engine if om == m else _engine(om, base_url=base_url, no_cache=no_cache,
                                               concurrency=concurrency, meter=engine, **net)
        program = pf.to_module(engine)
        metric = pf.metric_fn(judge_engine=judge)
        _log(f"evaluating {prompt_file} on {len(ds)} examples ({m})")
        res = _evaluate(program, ds, metric, concurrency)
        usage = _usage_totals(engine.snapshot())
        rows = [{"id": o.example.id, "source": o.example.source, "expected": o.example.expected,
                 "output": o.output, "score": o.score, "explanation": o.explanation,
                 "error": o.error} for o in res.outcomes]
        failures = [r for r in rows if r["score"] < 1.0]
        if json_output:
            _out_json({"prompt_file": str(prompt_file), "data": str(data), "model": m,
                       "metric": _metric_label(pf), "score": res.score, "n": len(rows),
                       "failures": len(failures), "results": rows, "usage": usage})
            return
        _out(f"score: {res.score:.3f} on {len(rows)} examples, {len(failures)} not fully "
             f"correct (metric {_metric_label(pf)})")
        for r in failures[: max(0, show)]:
            _out(f"\n[{r['id']}] score {r['score']:.2f}  {r['source']}")
            _out(f"  expected: {_one_line(r['expected'])}")
            _out(f"  got:      {_one_line(r['output'])}")
            _out(f"  why:      {_one_line(r['error'] or r['explanation'])}")
        if len(failures) > show:
            _out(f"\n... and {len(failures) - show} more (use --show N or --json)")
        _out(f"\ncalls: {usage['calls']} ({usage['cached_calls']} from cache)  tokens: "
             f"{usage['total_tokens']:,}  cost: ${usage['usd']:.4f}")


def _metric_label(pf: PromptFile) -> str:
    from .promptfile import metric_spec_text

    return metric_spec_text(pf.metric)


def _evaluate(program: Any, ds: Any, metric: Any, concurrency: int) -> Any:
    from .train.trainer import evaluate

    try:
        return evaluate(program, ds, metric, concurrency=concurrency)
    except RuntimeError as e:  # every example failed: the server or the model is wrong
        raise CLIError(f"{e} -- check --model, --base-url and the server", EXIT_FAILURE) from None


def _one_line(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- estimate ----------------------------------------------------------------------------------


@app.command(no_args_is_help=True)
def estimate(
    prompt_file: PromptArg,
    train: Annotated[Path, typer.Option("--train", "-t", help="Training data.",
                                        show_default=False)],
    val: Annotated[Path | None, typer.Option("--val", "-v", help="Validation data, as for "
                                             "optimize.")] = None,
    steps: StepsOpt = 8,
    batch_size: BatchOpt = 4,
    optimizer: OptimizerOpt = "tgd",
    model: ModelOpt = None,
    optimizer_model: OptimizerModelOpt = None,
    concurrency: ConcurrencyOpt = 8,
    json_output: JsonOpt = False,
) -> None:
    """Estimate the calls, tokens and dollars of an optimize run. Makes no calls.

    Counts the rendered template for every example, the expected answers, and the
    optimizer's call pattern (forward, backward, optimizer and validation calls per
    step), and prices them with the pricing table ($TRACEGRAD_PRICING overrides it).
    Cache hits would make a real run cheaper.

    Example:

        tracegrad estimate prompts/object_counting.prompt --train prompts/object_counting.train.jsonl --val prompts/object_counting.val.jsonl --steps 8
    """
    with _errors():
        opt = _check_optimizer(optimizer)
        pf = _load_prompt(prompt_file)
        tr = _load_data(pf, train, "--train")
        va = _load_data(pf, val, "--val")
        m, om = _resolve_models(pf, model, optimizer_model)
        est = estimate_run(pf, tr, va, steps=steps,
                           batch_size=batch_size, optimizer=opt, model=m, optimizer_model=om,
                           concurrency=concurrency)
        if json_output:
            _out_json(est)
            return
        _out(_estimate_text(est))


# What the trainer does per step (tracegrad/train/trainer.py, gate "non-decrease"):
# baseline: one forward call per validation example; each step: one forward call per batch
# example, then (TGD) one backward call per failed example plus up to 2 correct ones, one
# optimizer call (+1 repair at worst, +1 feedback summary when feedback is long), then the
# candidate is scored on the validation set (or re-run on the batch when there is none).
_BACKWARD_REPLY_TOKENS = 120
_REASONING_TOKENS = 100
_JUDGE_REPLY_TOKENS = 40


def _tokens(text: str) -> int:
    from .llm.base import estimate_tokens

    return estimate_tokens(text)


def _meta_prompt_tokens(name: str) -> int:
    from . import prompts

    try:
        return _tokens(prompts.load(name))
    except (KeyError, OSError):
        return 300


def estimate_run(pf: PromptFile, train: Any, val: Any, *, steps: int, batch_size: int,
                 optimizer: str, model: str, optimizer_model: str,
                 concurrency: int = 8) -> dict[str, Any]:
    """Expected calls, tokens and dollars of ``tracegrad optimize``; makes no call."""
    from . import template as tpl
    from .core.shorten import render
    from .llm.base import Usage
    from .llm.pricing import price_for

    def forward_tokens(ex: Any) -> tuple[int, int]:
        text = tpl.render(pf.body, {k: v for k, v in ex.inputs.items() if k in pf.fields})
        prompt = _tokens(text) + 4 + (_tokens(pf.system) + 4 if pf.system else 0)
        want = _tokens(render(ex.expected))
        reply = max(40, want + want // 2 + 4)  # the answer, or a short explanation of it
        cap = pf.params.get("max_tokens") or pf.params.get("max_completion_tokens")
        return prompt, min(reply, int(cap)) if cap else reply

    tr = [forward_tokens(ex) for ex in train]
    va = [forward_tokens(ex) for ex in val] if val is not None else []
    mean_tr = (sum(p for p, _ in tr) / len(tr), sum(c for _, c in tr) / len(tr))
    mean_va = (sum(p for p, _ in va) / len(va), sum(c for _, c in va) / len(va)) if va \
        else mean_tr
    body = _tokens(pf.body)
    batch = min(batch_size, len(train))
    n_val = len(val) if val is not None else 0
    rows: list[dict[str, Any]] = []

    def add(purpose: str, spec: str, calls: float, prompt: float, completion: float) -> None:
        calls_i = int(round(calls))
        if calls_i <= 0:
            return
        usage = Usage(int(round(calls * prompt)), int(round(calls * completion)))
        price = price_for(spec)
        rows.append({"purpose": purpose, "model": spec, "calls": calls_i,
                     "prompt_tokens": usage.prompt_tokens,
                     "completion_tokens": usage.completion_tokens,
                     "usd": price.cost(usage), "priced": price.known})

    if val is not None:
        add("baseline", model, n_val, *mean_va)
    add("forward", model, steps * batch, *mean_tr)
    bw_calls = 0
    if optimizer == "tgd":
        bw_calls = steps * batch  # failures + up to 2 correct examples, at most the batch
        bw_prompt = (_meta_prompt_tokens("textual_backward") + body + mean_tr[0] + mean_tr[1]
                     + 80 + 60)
        add("backward", optimizer_model, bw_calls, bw_prompt, _BACKWARD_REPLY_TOKENS)
    elif optimizer == "tgd-batched":
        # one call per chunk of the batch (TextualPropagator.chunk_chars, 16,000 chars)
        per_run = mean_tr[0] + mean_tr[1] + 80
        chunks = max(1, -(-batch * per_run * 4 // 16000))
        bw_calls = steps * chunks
        bw_prompt = (_meta_prompt_tokens("textual_backward") + body
                     + batch * per_run / chunks + 60)
        add("backward", optimizer_model, bw_calls, bw_prompt, _BACKWARD_REPLY_TOKENS)
    if optimizer in ("tgd", "tgd-batched"):
        fb = min(batch * (_BACKWARD_REPLY_TOKENS + 20), 1500)
        opt_prompt = (_meta_prompt_tokens("tgd_update") + body + fb + 3 * body
                      + 40 * len(pf.constraints) + 150)
    elif optimizer == "trace":
        listing = min(batch * (mean_tr[0] + mean_tr[1] + 30), 4000)
        opt_prompt = (_meta_prompt_tokens("trace_update") + body + listing + batch * 40
                      + 3 * body + 40 * len(pf.constraints) + 150)
    else:  # opro: a scoreboard of up to 20 scored candidates
        board = min(steps, 20) / 2 * (body + 80)
        opt_prompt = _meta_prompt_tokens("opro_update") + board + 40 * len(pf.constraints) + 150
    add("optimizer", optimizer_model, steps, opt_prompt, body + _REASONING_TOKENS)
    if val is not None:
        add("validation", model, steps * n_val, *mean_va)
    else:
        add("validation", model, steps * batch, *mean_tr)
    if pf.uses_judge:
        judged = sum(r["calls"] for r in rows if r["purpose"] in ("baseline", "forward",
                                                                    "validation"))
        rubric = _tokens(str(pf.metric.get("judge", "") if isinstance(pf.metric, dict)
                             else pf.metric))
        add("judge", optimizer_model, judged,
            _meta_prompt_tokens("judge_system") + rubric + 2 * mean_tr[1] + 40,
            _JUDGE_REPLY_TOKENS)
    total = {k: sum(r[k] for r in rows) for k in ("calls", "prompt_tokens", "completion_tokens")}
    total["usd"] = sum(r["usd"] for r in rows)
    # upper bound: one repair per optimizer call, every reply twice as long, 20% retries
    upper = 0.0
    for r in rows:
        price = price_for(r["model"])
        factor = 2.0 if r["purpose"] == "optimizer" else 1.2
        upper += factor * price.cost(Usage(r["prompt_tokens"], 2 * r["completion_tokens"]))
    # a budget is enforced by reserving each call's worst case before it is sent (prompt +
    # max_tokens, or 1024 reply tokens), so concurrent calls need headroom under the limit
    from .llm.meter import DEFAULT_WORST_CASE_COMPLETION_TOKENS

    cap = pf.params.get("max_tokens") or pf.params.get("max_completion_tokens")
    worst_reply = int(cap) if cap else DEFAULT_WORST_CASE_COMPLETION_TOKENS
    worst_call = max(price_for(spec).cost(Usage(int(opt_prompt), worst_reply))
                     for spec in {model, optimizer_model})
    headroom = concurrency * worst_call
    notes = [
        "tokens are counted as about 4 characters each; replies are guessed from the expected "
        "outputs",
        "early stops (a perfect validation score) and cache hits make a real run cheaper",
    ]
    if headroom > 0:
        notes.append(f"a budget reserves each call's worst case before sending it: with "
                     f"--concurrency {concurrency} it needs about ${headroom:.4f} of headroom, "
                     "included in the suggestion")
    unpriced = sorted({r["model"] for r in rows if not r["priced"]})
    if unpriced:
        notes.append(f"no price known for {', '.join(unpriced)}: counted as $0 (set "
                     "$TRACEGRAD_PRICING to a JSON price table)")
    if bw_calls == 0 and not optimizer.startswith("tgd"):
        notes.append(f"{optimizer} makes no backward calls")
    return {
        "prompt_file": str(pf.path), "optimizer": optimizer, "steps": steps,
        "batch_size": batch_size, "train_size": len(train), "val_size": n_val,
        "model": model, "optimizer_model": optimizer_model, "rows": rows, "total": total,
        "upper_usd": upper, "budget_headroom_usd": headroom,
        "suggested_budget_usd": _nice_ceiling(upper * 1.2 + headroom),
        "calls_made": 0, "notes": notes,
    }


def _nice_ceiling(x: float) -> float:
    """A round number at or above ``x`` (0.013 -> 0.02, 1.3 -> 2, 13 -> 20)."""
    import math

    if x <= 0:
        return 0.01
    mag = 10 ** math.floor(math.log10(x))
    for step in (1, 2, 5, 10):
        if step * mag >= x:
            return round(step * mag, 10)
    return round(10 * mag, 10)


def _estimate_text(e: dict[str, Any]) -> str:
    lines = [f"estimate for {e['optimizer']}, {e['steps']} steps x batch {e['batch_size']}, "
             f"{e['train_size']} training / {e['val_size']} validation examples "
             "(no calls were made):", ""]
    lines.append(f"{'purpose':<12}{'model':<24}{'calls':>8}{'tokens in':>12}{'tokens out':>12}"
                 f"{'USD':>10}")
    for r in e["rows"]:
        lines.append(f"{r['purpose']:<12}{r['model']:<24}{r['calls']:>8}{r['prompt_tokens']:>12,}"
                     f"{r['completion_tokens']:>12,}{r['usd']:>10.4f}")
    t = e["total"]
    lines.append(f"{'total':<36}{t['calls']:>8}{t['prompt_tokens']:>12,}"
                 f"{t['completion_tokens']:>12,}{t['usd']:>10.4f}")
    lines.append("")
    lines.append(f"expected cost: ${t['usd']:.4f} (up to ${e['upper_usd']:.4f} with retries and "
                 f"long replies); suggested --budget-usd {e['suggested_budget_usd']:g}")
    for note in e.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


# -- report --------------------------------------------------------------------------------------


@app.command(no_args_is_help=True)
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by optimize.",
                                            show_default=False)],
) -> None:
    """Write (or rewrite) report.html for a run directory and print its path.

    Example:

        tracegrad report tracegrad-runs/object_counting-20250101-120000
    """
    from .train.report import write_report

    with _errors():
        if not run_dir.is_dir():
            raise CLIError(f"{run_dir}: no such directory")
        if not (run_dir / "config.json").is_file():
            raise CLIError(f"{run_dir}: not a run directory (no config.json)")
        path = write_report(run_dir)
        _out(str(path))


# -- demo ------------------------------------------------------------------------------------------


@app.command()
def demo(
    steps: Annotated[int, typer.Option("--steps", "-n", min=1, help="Optimization steps.")] = 4,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Keep the run here "
                                                 "(default: a temporary directory).")] = None,
    optimizer: OptimizerOpt = "tgd",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    json_output: JsonOpt = False,
) -> None:
    """Run the whole optimization loop offline on a SIMULATED model. No key, no network.

    A scripted model world (tracegrad/demo.py) answers counting questions; it answers
    better when its prompt contains the right instructions. The library's real loop
    runs on it: forward passes, metric feedback, backward feedback, the optimizer's
    rewrite, validation. Nothing about a real model's quality can be learned from it.

    Example:

        tracegrad demo --steps 4
    """
    from . import demo as demo_mod

    with _errors():
        opt = _check_optimizer(optimizer)
        if run_dir is not None and ((run_dir / "history.jsonl").exists()
                                    or (run_dir / "state.json").exists()):
            raise CLIError(f"--run-dir {run_dir} already holds a run; choose another directory")
        _log("[bold magenta]SIMULATED[/bold magenta]: this demo runs on a scripted mock model, "
             "not a real LLM")
        res = demo_mod.run_demo(run_dir=run_dir, steps=steps, optimizer=opt, seed=seed,
                                log=_log)
        if json_output:
            _out_json({"simulated": True, **res})
            return
        _out("SIMULATED demo (scripted mock model, no real LLM was called)")
        _out("")
        _out("prompt before:")
        _out(_indent(res["before"]))
        _out("prompt after:")
        _out(_indent(res["after"]))
        _out("diff:")
        _out(_indent(_diff(res["before"], res["after"], "before", "after")))
        _out("")
        scores = " -> ".join(f"{s:.2f}" for s in res["val_scores"])
        _out(f"validation score by step: {scores}")
        _out(f"score: {res['baseline_score']:.3f} -> {res['best_score']:.3f} (SIMULATED)")
        _out(f"calls: {res['calls']} simulated (forward {res['calls_by_purpose'].get('forward', 0)}"
             f", backward {res['calls_by_purpose'].get('backward', 0)}, optimizer "
             f"{res['calls_by_purpose'].get('optimizer', 0)})")
        _out(f"prompt file: {res['prompt_file']} (the original is kept as "
             f"{res['prompt_file']}.bak)")
        _out(f"run dir: {res['run_dir']}")
        if res.get("report"):
            _out(f"report: {res['report']}")


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip("\n").splitlines())


# -- cache -------------------------------------------------------------------------------------

CachePathOpt = Annotated[
    Path | None,
    typer.Option("--path", help="The cache file (default: $TRACEGRAD_CACHE_DIR/cache.sqlite3 "
                 "or ~/.cache/tracegrad/cache.sqlite3)."),
]


class _NoEngine:
    model = "none"

    def complete(self, request: Any) -> Any:  # pragma: no cover - never called
        raise RuntimeError("the cache command makes no calls")

    async def acomplete(self, request: Any) -> Any:  # pragma: no cover
        raise RuntimeError("the cache command makes no calls")


def _cache(path: Path | None) -> Any:
    from .llm.cache import Cache, default_cache_path

    p = path or default_cache_path()
    return Cache(_NoEngine(), p, enabled=True), p


@cache_app.command("info")
def cache_info(path: CachePathOpt = None, json_output: JsonOpt = False) -> None:
    """Show where the cache is, how many replies it holds and its size.

    Example:

        tracegrad cache info
    """
    with _errors():
        cache, p = _cache(path)
        if not Path(p).exists():
            info = {"path": str(p), "entries": 0, "size_bytes": 0, "exists": False}
        else:
            info = {**cache.info(), "exists": True}
            cache.close()
        for k in ("hits", "misses", "enabled"):
            info.pop(k, None)
        if json_output:
            _out_json(info)
            return
        _out(f"cache: {info['path']}{'' if info['exists'] else ' (not created yet)'}")
        _out(f"entries: {info['entries']}  size: {info['size_bytes'] / 1024:.1f} KiB")


@cache_app.command("clear")
def cache_clear(path: CachePathOpt = None, json_output: JsonOpt = False) -> None:
    """Delete every cached reply (the next runs call the model again).

    Example:

        tracegrad cache clear
    """
    with _errors():
        cache, p = _cache(path)
        n = 0
        if Path(p).exists():
            n = cache.clear()
            cache.close()
        if json_output:
            _out_json({"path": str(p), "removed": n})
            return
        _out(f"removed {n} cached replies from {p}")


def _version(value: bool) -> None:
    if value:
        from . import __version__

        _out(f"tracegrad {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.",
                                          is_eager=True, callback=_version)] = False,
) -> None:
    """Optimize LLM prompts and pipelines with textual gradients."""


def main() -> None:  # pragma: no cover - console entry point alias
    app()
