"""``tracegrad estimate``: the calls, tokens and dollars of a run, before making it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..train.estimate import estimate_run, prompt_file_shape
from ._shared import (
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
    concurrency: ConcurrencyOpt = 8,
    json_output: JsonOpt = False,
    batch_eval: Annotated[bool, typer.Option(
        "--batch-eval", metavar=" ", help="Price the baseline and validations at Batch API prices, as "
        "`optimize --batch-eval` sends them.")] = False,
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
        est = estimate_run(prompt_file_shape(pf, tr, va), optimizer=opt, steps=steps,
                           batch_size=batch_size, model=m, optimizer_model=om,
                           concurrency=concurrency, batch_eval=batch_eval)
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
    lines.append(f"expected cost: ${t['usd']:.4f} (up to ${e['upper_usd']:.4f} with retries and "
                 f"long replies); suggested --budget-usd {e['suggested_budget_usd']:g}")
    for note in e.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


