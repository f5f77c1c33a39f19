"""``tracegrad eval``: score a prompt file on a dataset and list what it gets wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._shared import (
    EXIT_FAILURE,
    BaseUrlOpt,
    BatchPollOpt,
    CLIError,
    ConcurrencyOpt,
    JsonOpt,
    ModelOpt,
    NoCacheOpt,
    OptimizerModelOpt,
    PromptArg,
    RetriesOpt,
    TimeoutOpt,
    _batch_options,
    _engine,
    _errors,
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

QuietOpt = Annotated[bool, typer.Option(
    "--quiet", "-q", help="No progress display on stderr (results still go to stdout).")]


@app.command(name="eval", no_args_is_help=True)
def eval_(
    prompt_file: PromptArg,
    data: Annotated[Path | None, typer.Option(
        "--data", "-d", help="Dataset to score on (.jsonl, .csv, .json). Without it, one "
        "example made of the inputs' defaults is run and shown (a smoke test).",
        show_default=False)] = None,
    model: ModelOpt = None,
    optimizer_model: OptimizerModelOpt = None,
    base_url: BaseUrlOpt = None,
    concurrency: ConcurrencyOpt = 32,
    no_cache: NoCacheOpt = False,
    show: Annotated[int, typer.Option("--show", help="How many failures to list.")] = 10,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Also write every row (inputs, rendered prompt, output, "
        "expected, score, the metric's explanation) to this file: .jsonl, .csv or .html.",
        show_default=False)] = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    timeout: TimeoutOpt = 60.0,
    max_retries: RetriesOpt = 4,
    batch: Annotated[bool, typer.Option(
        "--batch", metavar=" ", help="Send the calls through the provider's Batch API: half the price, "
        "results within the provider's window (typically within 24 h). Resumable: the same "
        "command again polls the same batches.")] = False,
    run_dir: Annotated[Path | None, typer.Option(
        "--run-dir", help="With --batch: where the batch journal is kept (default: "
        "tracegrad-runs/eval-NAME-HASH, the same for the same prompt, data and model).")] = None,
    batch_poll: BatchPollOpt = 5.0,
) -> None:
    """Score a prompt file on a dataset and list the examples it gets wrong.

    While it runs, stderr shows the count, ETA, calls, tokens and dollars so far (a bar
    on a terminal, a status line every few seconds otherwise; --quiet turns it off).

    Example:

        tracegrad eval prompts/support_intent.prompt --data prompts/support_intent.val.jsonl -o results.html

    `tracegrad batch status RUN_DIR` and `tracegrad batch cancel RUN_DIR` inspect and stop
    the batches of an `eval --batch`.
    """
    net = {"timeout": timeout, "max_retries": max_retries}
    with _errors():
        pf = _load_prompt(prompt_file)
        _check_output(output, data, run_dir, batch)
        smoke = _smoke_row(pf) if data is None else None
        ds = _load_data(pf, data, "--data")
        m, om = _resolve_models(pf, model, optimizer_model)
        engine = _engine(m, base_url=base_url, no_cache=no_cache, concurrency=concurrency, **net)
        if smoke is not None:
            _smoke(pf, engine, smoke, m, json_output)
            return
        judge = engine if om == m else _engine(om, base_url=base_url, no_cache=no_cache,
                                               concurrency=concurrency, meter=engine, **net)
        program = pf.to_module(engine)
        metric = pf.metric_fn(judge_engine=judge)
        _log(f"evaluating {prompt_file} on {_plural(len(ds), 'example')} ({m})")
        opts = _batch_plan(pf, data, m, engine, run_dir, batch_poll) if batch else None
        res = _evaluate(program, ds, metric, concurrency, None if quiet else engine.snapshot,
                        opts)
        snap = engine.snapshot()
        usage = _usage_totals(snap)
        if res.batch is not None:
            usage["batch"] = res.batch
        from ..train.examples import example_rows, summarize, write_examples

        rows = example_rows(res.outcomes, program.rendered_messages)
        summary = summarize(rows, snap)
        if output is not None:
            write_examples(output, rows, {"prompt_file": str(prompt_file), "data": str(data),
                                          "model": m, "metric": _metric_label(pf), **summary})
            _log(f"wrote {_plural(len(rows), 'row')} to {output}")
        if json_output:
            _out_json({"prompt_file": str(prompt_file), "data": str(data), "model": m,
                       "metric": _metric_label(pf), "score": res.score, "n": len(rows),
                       "failures": summary["failures"], "summary": summary,
                       "output": str(output) if output else None, "results": rows,
                       "usage": usage})
            return
        _print_eval(pf, rows, summary, usage, show)


def _check_output(output: Path | None, data: Path | None, run_dir: Path | None,
                  batch: bool) -> None:
    """-o (and --run-dir) are checked before any call: a typo must not waste a run."""
    if run_dir is not None and not batch:
        raise CLIError("--run-dir is only used with --batch (it keeps the batch journal)")
    if output is None:
        return
    if data is None:
        raise CLIError("--output writes the rows of a scored dataset: pass --data FILE")
    from ..train.examples import export_format

    try:
        export_format(output)
    except ValueError as e:
        raise CLIError(f"--output {e}") from None
    if output.is_dir():
        raise CLIError(f"--output {output} is a directory; give a file path")
    if not output.parent.exists():
        raise CLIError(f"--output {output}: the directory {output.parent} does not exist")


def _print_eval(pf: PromptFile, rows: list[dict[str, Any]], summary: dict[str, Any],
                usage: dict[str, Any], show: int) -> None:
    failures = [r for r in rows if r["score"] < 1.0]
    _out(f"score: {summary['score']:.3f} on {_plural(len(rows), 'example')}, "
         f"{len(failures)} not fully correct (metric {_metric_label(pf)})")
    for r in failures[: max(0, show)]:
        _out(f"\n[{r['id']}] score {r['score']:.2f}  {r['source']}")
        _out(f"  expected: {_one_line(r['expected'])}")
        _out(f"  got:      {_one_line(r['output'])}")
        _out(f"  why:      {_one_line(r['error'] or r['explanation'])}")
    if len(failures) > show:
        _out(f"\n... and {len(failures) - show} more (use --show N, --json or -o FILE)")
    _out(f"\ncalls: {usage['calls']} ({usage['cached_calls']} from cache)  tokens: "
         f"{usage['total_tokens']:,}  cost: ${usage['usd']:.4f}")
    if summary["judge_unreadable"]:
        _out(f"judge replies with no readable score (each counted 0): "
             f"{summary['judge_unreadable']}")
    if usage["cut_replies"] or usage["empty_replies"]:  # scored as they came, said here
        _out(f"replies cut at the token limit: {usage['cut_replies']} (answers "
             f"{summary['truncated_replies']}, judge {summary['truncated_judge_replies']})  "
             f"empty replies: {usage['empty_replies']} (raise max_tokens in params if "
             "answers are cut)")
    if usage.get("batch") is not None:
        _out(_batch_line(usage["batch"]))


def _batch_plan(pf: PromptFile, data: Path | None, model: str, engine: Any,
                run_dir: Path | None, poll: float) -> Any:
    """The Batch API options of ``eval --batch``; None (live, with a note) without one."""
    import hashlib

    from ..llm.batch import batch_capable

    if not batch_capable(engine):
        _log(f"[yellow]note:[/yellow] {model} has no Batch API (not an OpenAI-compatible "
             "engine): evaluating live")
        return None
    if run_dir is None:
        ident = f"{pf.path.resolve()}\0{Path(str(data)).resolve()}\0{model}".encode()
        run_dir = Path("tracegrad-runs") / f"eval-{pf.name}-{hashlib.sha256(ident).hexdigest()[:8]}"
    _log(f"batch journal: {run_dir} (`tracegrad batch status {run_dir}`)")
    return _batch_options(run_dir, poll)


def _batch_line(report: dict[str, Any]) -> str:
    n = report.get("batches_submitted", 0)
    line = (f"batch: {report.get('lines', 0)} requests in {n} new batch{'' if n == 1 else 'es'} "
            f"({report.get('resumed_parts', 0)} resumed), "
            f"{report.get('failed_lines', 0)} failed lines ({report.get('retried_live', 0)} "
            f"retried live, {report.get('retried_in_batch', 0)} in a new batch)")
    return line + (f"\nnote: {report['note']}" if report.get("note") else "")


def _smoke_row(pf: PromptFile) -> dict[str, Any]:
    """One example from the inputs' defaults (or examples), for ``eval`` without data."""
    row = {**pf.samples, **pf.defaults}
    missing = sorted(pf.fields - set(row))
    if missing:
        line = pf.key_lines.get("inputs") or pf.key_lines.get("input") or pf.field_line(missing[0])
        raise CLIError(f"{pf.path}:{line}: without --data, every input the template reads needs a "
                       f"default to run one example, and {', '.join(missing)} has none; pass "
                       "--data FILE")
    return row


def _smoke(pf: PromptFile, engine: Any, row: dict[str, Any], model: str, json_output: bool
           ) -> None:
    """Run the prompt once on ``row`` and show what was sent and what came back."""
    program = pf.to_module(engine)
    _log(f"no --data: running one example from the inputs' defaults ({model}); nothing is "
         "scored")
    out = program(row)
    sent = getattr(out.op, "messages", None)  # what the model was sent
    usage = _usage_totals(engine.snapshot())
    if json_output:
        _out_json({"prompt_file": str(pf.path), "model": model, "inputs": row,
                   "output": out.value, "usage": usage})
        return
    for name, value in row.items():
        _out(f"{name}: {_one_line(value)}")
    if sent:
        for msg in sent:
            _out(f"[{msg['role']}] {_one_line(msg.get('content'))}")
    _out(f"\noutput: {out.value}")
    _out(f"\ncalls: {usage['calls']} ({usage['cached_calls']} from cache)  tokens: "
         f"{usage['total_tokens']:,}  cost: ${usage['usd']:.4f}")


def _metric_label(pf: PromptFile) -> str:
    from ..promptfile import metric_spec_text

    return metric_spec_text(pf.metric)


def _evaluate(program: Any, ds: Any, metric: Any, concurrency: int, usage_fn: Any,
              batch: Any = None) -> Any:
    from ..train.progress import EvalProgress
    from ..train.trainer import evaluate

    progress = EvalProgress(usage_fn is not None, usage_fn)
    try:
        return evaluate(program, ds, metric, concurrency=concurrency, progress=progress,
                        batch=batch)
    except RuntimeError as e:  # every example failed: the server or the model is wrong
        raise CLIError(f"{e} -- check --model, --base-url and the server", EXIT_FAILURE) from None


def _one_line(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


