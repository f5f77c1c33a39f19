"""tracegrad on the three benchmark workloads (see RESULTS.md for the workloads).

    python benchmarks/run_tracegrad.py --url URL --mode textual|batched|trace

Modes:

* ``textual``: ``TextualPropagator(batch_feedback=False)`` -- one feedback call per LLM
  node (all nodes of a generation concurrently) -- and ``TGD`` (one call per parameter,
  parameters concurrently).
* ``batched``: the same with ``batch_feedback=True`` -- the LLM nodes of a generation that
  share a parameter are asked about together, in chunks bounded by a size budget.
* ``trace``: ``TracePropagator`` (no LLM call) and ``TraceOptimizer`` (one call per step).

The engine is ``tracegrad.llm.LLM("openai:bench-model", base_url=URL, cache=False,
max_concurrency=32)``: the production wrapper stack (meter, limits, retries) with the
cache off, so every call reaches the server. ``max_concurrency`` 32 is the default
ceiling; larger batches pass ``--max-concurrency`` so a whole level can be in flight at
once (the critical-path limit assumes that). The forward pass of a minibatch runs through
``tg.map``, the README's way to run a hand-written loop's batch (tracegrad's ops are
synchronous per call): each item on a thread that outlives the step, in the caller's
context. (Until this was used, a ``ThreadPoolExecutor`` built per step started 256 threads
per forward level at batch 256: 0.15-0.2 s of a 0.4 s level.)
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import StepClock  # noqa: E402

MODES = ("textual", "batched", "trace")


def make(mode: str, params: list, llm: Any):
    import tracegrad as tg
    from tracegrad.optim import TGD, TraceOptimizer

    if mode == "trace":
        return tg.TracePropagator(), TraceOptimizer(params, llm)
    prop = tg.TextualPropagator(llm, batch_feedback=(mode == "batched"))
    return prop, TGD(params, llm)


def forward_all(fn, items, workers: int):
    import tracegrad as tg

    return tg.map(fn, items, concurrency=max(1, min(workers, len(items))))


def diag(result: Any, backward: Any) -> dict[str, Any]:
    """tracegrad's own account of a step (diagnostics only; the numbers come from the server)."""
    events = [e.get("event") for e in getattr(result, "events", [])]
    events += [e.get("event") for e in getattr(backward, "events", [])]
    return {"optimizer_calls": getattr(result, "calls", None),
            "backward_calls": getattr(backward, "calls", None),
            "events": sorted(set(e for e in events if e))}


def w1(llm, mode: str, steps: int, batch: int, clock: StepClock, workers: int) -> dict:
    import tracegrad as tg

    system = tg.Parameter(common.W1_PROMPT, role="system prompt to the language model",
                          name="system_prompt")
    qa = tg.LLMCall(llm, system=system)
    loss_fn = tg.MetricLoss(common.metric, name="exact_match")
    prop, opt = make(mode, [system], llm)
    data = common.questions(batch)
    diags = []
    for _ in range(steps):
        with clock:
            opt.zero_grad()
            losses = forward_all(lambda item: loss_fn(qa(item[0]), item[1]), data, workers)
            total = tg.sum(losses)
            b = total.backward(propagator=prop)
            r = opt.step()
        diags.append(diag(r, b))
    return {"values": {"qa": system.value}, "diag": diags}


def w2(llm, mode: str, steps: int, batch: int, clock: StepClock, workers: int) -> dict:
    import tracegrad as tg

    prompts = {k: tg.Parameter(v, role=f"system prompt of the {k} step", name=f"{k}_prompt")
               for k, v in common.W2_PROMPTS.items()}
    calls = {k: tg.LLMCall(llm, system=p, name=f"{k}_call") for k, p in prompts.items()}
    loss_fn = tg.MetricLoss(common.metric, name="exact_match")
    prop, opt = make(mode, list(prompts.values()), llm)
    data = common.questions(batch, offset=100)

    def run(item):
        q, a = item
        h = calls["extract"](q)
        h = calls["solve"](h)
        h = calls["format"](h)
        return loss_fn(h, a)

    diags = []
    for _ in range(steps):
        with clock:
            opt.zero_grad()
            losses = forward_all(run, data, workers)
            b = tg.sum(losses).backward(propagator=prop)
            r = opt.step()
        diags.append(diag(r, b))
    return {"values": {k: p.value for k, p in prompts.items()}, "diag": diags}


def w3(llm, mode: str, iterations: int, clock: StepClock) -> dict:
    import tracegrad as tg

    answer = tg.Parameter(common.W3_ANSWER, role="solution to the math question", name="solution")
    judge = tg.TextLoss(common.W3_JUDGE, engine=llm)
    prop, opt = make(mode, [answer], llm)
    diags = []
    for _ in range(iterations):
        with clock:
            opt.zero_grad()
            loss = judge(answer)
            b = loss.backward(propagator=prop)
            r = opt.step()
        diags.append(diag(r, b))
    return {"values": {"solution": answer.value}, "diag": diags}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--mode", default="textual", choices=MODES)
    ap.add_argument("--workloads", default="w1,w2,w3")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch1", type=int, default=common.W1_BATCH)
    ap.add_argument("--batch2", type=int, default=common.W2_BATCH)
    ap.add_argument("--iterations", type=int, default=common.W3_ITERATIONS)
    ap.add_argument("--max-concurrency", type=int, default=32)
    ap.add_argument("--out")
    args = ap.parse_args()

    t_import = time.perf_counter()
    import tracegrad as tg
    from tracegrad.llm import LLM

    import_s = time.perf_counter() - t_import
    llm = LLM(f"openai:{common.MODEL}", base_url=args.url, api_key="sk-bench", cache=False,
              max_concurrency=args.max_concurrency)
    tg.set_backward_llm(llm)

    warm = StepClock()
    with warm:
        llm.chat("Warm-up: say OK.", system="[warmup]")

    result: dict = {"framework": "tracegrad", "variant": args.mode, "import_s": import_s,
                    "warmup": warm.steps[0], "workloads": {}}
    for w in args.workloads.split(","):
        clock = StepClock()
        if w == "w1":
            info = w1(llm, args.mode, args.steps, args.batch1, clock, args.max_concurrency)
            expected = {"qa": common.IMPROVED["qa"]}
        elif w == "w2":
            info = w2(llm, args.mode, args.steps, args.batch2, clock, args.max_concurrency)
            expected = {k: common.IMPROVED[k] for k in common.W2_PROMPTS}
        else:
            info = w3(llm, args.mode, args.iterations, clock)
            expected = {"solution": common.IMPROVED["solution"]}
        result["workloads"][w] = {"steps": clock.steps, "diag": info["diag"],
                                  "problems": common.check_values(info["values"], expected)}
    result["max_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    common.emit(result, args.out)


if __name__ == "__main__":
    main()
