"""``tracegrad estimate``: the calls, tokens and dollars of a run, before making it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._shared import (
    BaseUrlOpt,
    BatchOpt,
    ConcurrencyOpt,
    JsonOpt,
    ModelOpt,
    OptimizerModelOpt,
    OptimizerOpt,
    PromptArg,
    StepsOpt,
    _check_optimizer,
    _errors,
    _load_data,
    _load_prompt,
    _out,
    _out_json,
    _plural,
    _resolve_models,
    app,
)


@app.command(no_args_is_help=True)
def estimate(
    prompt_file: PromptArg,
    train: Annotated[Path, typer.Option("--train", "-t", help="Training data.",
                                        show_default=False)],
    val: Annotated[Path | None, typer.Option("--val", help="Validation data, as for "
                                             "optimize.")] = None,
    steps: StepsOpt = 8,
    batch_size: BatchOpt = 4,
    optimizer: OptimizerOpt = "tgd",
    model: ModelOpt = None,
    optimizer_model: OptimizerModelOpt = None,
    concurrency: ConcurrencyOpt = 32,
    accuracy: Annotated[float, typer.Option(
        "--accuracy", min=0.0, max=1.0, help="Share of training examples the prompt already "
        "gets right (e.g. from `tracegrad eval`): it sets how many steps find failures and "
        "how many, which backward, rewrite and validation calls depend on.")] = 0.5,
    base_url: BaseUrlOpt = None,
    json_output: JsonOpt = False,
    batch_eval: Annotated[bool, typer.Option(
        "--batch-eval", metavar=" ", help="Price the baseline and validations at Batch API prices, as "
        "`optimize --batch-eval` sends them.")] = False,
) -> None:
    """Estimate the calls, tokens and dollars of an optimize run. Makes no calls.

    Counts the rendered template for every example, the expected answers, and the
    optimizer's call pattern (forward, backward, optimizer and validation calls per
    step), and prices them with the pricing table ($TRACEGRAD_PRICING overrides it).
    A run can stop early (a perfect validation score), so a range is given too: from
    the earliest stop to every example failing. Takes the same --base-url as optimize
    (and sends nothing to it).

    Example:

        tracegrad estimate prompts/object_counting.prompt --train prompts/object_counting.train.jsonl --val prompts/object_counting.val.jsonl --steps 8
    """
    from ..train.estimate import estimate_run, prompt_file_shape

    with _errors():
        opt = _check_optimizer(optimizer)
        pf = _load_prompt(prompt_file)
        tr = _load_data(pf, train, "--train")
        va = _load_data(pf, val, "--val")
        m, om = _resolve_models(pf, model, optimizer_model)
        est = estimate_run(prompt_file_shape(pf, tr, va), optimizer=opt, steps=steps,
                           batch_size=batch_size, model=m, optimizer_model=om,
                           concurrency=concurrency, accuracy=accuracy,
                           batch_eval=batch_eval)
        est = {"prompt_file": str(pf.path), **est}
        if json_output:
            _out_json(est)
            return
        _out(_estimate_text(est))


def _estimate_text(e: dict[str, Any]) -> str:
    lines = [f"estimate for {e['optimizer']}, {_plural(e['steps'], 'step')} x batch {e['batch_size']}, "
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
    lo, hi, ps = e["range"]["low"], e["range"]["high"], e["per_step"]
    lines.append(f"expected: {_plural(t['calls'], 'call')}, {t['prompt_tokens'] + t['completion_tokens']:,} "
                 f"tokens, assuming {e['accuracy']:.0%} of training examples are already right "
                 "(--accuracy)")
    lines.append(f"range: {lo['calls']} to {_plural(hi['calls'], 'call')}, {lo['total_tokens']:,} to "
                 f"{hi['total_tokens']:,} tokens, ${lo['usd']:.4f} to ${hi['usd']:.4f}")
    lines.append(f"  low: {e['range']['low_means']}")
    lines.append("  high: every example wrong, every repair needed, replies twice as long")
    lines.append(f"early stopping: the run ends as soon as its validation score is perfect; a "
                 f"step costs about {ps['calls']:g} calls ({ps['skipped_step_calls']} when its "
                 "minibatch is already right)")
    lines.append(f"expected cost: ${t['usd']:.4f} (up to ${e['upper_usd']:.4f} with retries and "
                 f"long replies); suggested --budget-usd {e['suggested_budget_usd']:g}")
    for note in e.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


