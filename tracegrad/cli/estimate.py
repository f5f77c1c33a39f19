"""``tracegrad estimate``: the calls, tokens and dollars of a run, before making it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..promptfile import PromptFile
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
    _resolve_models,
    app,
)


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
    from ..llm.base import estimate_tokens

    return estimate_tokens(text)


def _meta_prompt_tokens(name: str) -> int:
    from .. import prompts

    try:
        return _tokens(prompts.load(name))
    except (KeyError, OSError):
        return 300


def estimate_run(pf: PromptFile, train: Any, val: Any, *, steps: int, batch_size: int,
                 optimizer: str, model: str, optimizer_model: str,
                 concurrency: int = 8) -> dict[str, Any]:
    """Expected calls, tokens and dollars of ``tracegrad optimize``; makes no call."""
    from .. import template as tpl
    from ..core.shorten import render
    from ..llm.base import Usage
    from ..llm.pricing import price_for

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
    from ..llm.meter import DEFAULT_WORST_CASE_COMPLETION_TOKENS

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


