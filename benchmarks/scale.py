"""Scale benchmarks that need no server: trace-mode backward on 10,000-node graphs, and
memory over 1,000 forward+backward+step iterations on the mock engine.

    python benchmarks/scale.py [--steps 1000] [--nodes 10000] [--out FILE]

Backward graphs (built from tracegrad's own string ops, no LLM; only ``backward`` is
timed, median of 5 runs on a fresh copy of the feedback each time):

* ``batch``: one prompt parameter shared by 2,000 examples (format -> concat -> metric
  loss per example) and one aggregate loss -- the shape of a large minibatch.
* ``chain``: one parameter at the start of a 5,000-step chain -- a deep pipeline.
* ``chain_100_params``: the same chain with a new parameter joined every 50 steps, so
  that 100 parameters each reach a long tail of the graph -- the worst case for a
  per-parameter walk.

Memory: the workload-1 pipeline at batch 4 (LLM call per example, metric loss, sum,
backward, optimizer step, zero_grad) on ``tracegrad.llm.LLM("mock", replies=...)`` --
the same wrapper stack as production, replies from ``replies.py`` -- for ``--steps``
iterations, in textual and in trace mode. tracemalloc's current size (after
``gc.collect()``) and the process RSS are sampled every 10% of the run; growth is the
last sample minus the sample after the first 10% (warm-up). Each mode runs in a fresh
interpreter started with ``-X tracemalloc=1``, traced from its first allocation. ``MockLLM``
keeps every request for inspection by design, so the runner calls its ``reset()`` each step.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import replies  # noqa: E402

import tracegrad as tg  # noqa: E402
from tracegrad.core.variable import topo_order  # noqa: E402


def _metric(pred: str, exp: str) -> tuple[float, str]:
    return (1.0, "Correct.") if pred.endswith(exp) else (0.0, f"Wrong: expected {exp}.")


def graph_batch(n_nodes: int) -> tuple[tg.Variable, int]:
    p = tg.Parameter("[qa] prompt", role="system prompt", name="prompt")
    loss_fn = tg.MetricLoss(_metric, name="m")
    losses = []
    for i in range((n_nodes - 2) // 5):  # x, format, "!" leaf, concat, loss
        x = tg.Variable(f"question {i}", role="question")
        f = tg.format("{{ p }} {{ x }}", p=p, x=x)
        out = tg.concat(f, "!")
        losses.append(loss_fn(out, str(i)))
    root = tg.sum(losses)
    return root, len(topo_order(root))


def graph_chain(n_nodes: int, params_every: int | None = None) -> tuple[tg.Variable, int]:
    h: tg.Variable = tg.Parameter("p0", role="parameter", name="p0")
    steps = (n_nodes - 3) // 2
    k = 1
    for i in range(steps):
        if params_every and i and i % params_every == 0:
            extra = tg.Parameter(f"p{k}", role="parameter", name=f"p{k}")
            k += 1
            h = tg.concat(h, extra)
        else:
            h = tg.concat(h, "x")
    root = tg.MetricLoss(_metric, name="m")(h, "done")
    return root, len(topo_order(root))


def time_backward(build, repeats: int = 5) -> dict[str, Any]:
    root, nodes = build()
    params = [v for v in topo_order(root) if isinstance(v, tg.Parameter)]
    times = []
    for _ in range(repeats):
        for p in params:
            p.zero_grad()
        root.zero_grad()
        t0 = time.perf_counter()
        root.backward(propagator=tg.TracePropagator())
        times.append(time.perf_counter() - t0)
    assert all(p.grads for p in params), "every parameter must receive feedback"
    return {"nodes": nodes, "params": len(params), "backward_s": statistics.median(times),
            "runs_s": times}


# -- memory ----------------------------------------------------------------------------------


def mock_engine():
    from tracegrad.llm import LLM

    def answer(request):
        return replies.reply({"messages": request.messages})

    return LLM("mock", replies=answer, max_concurrency=8)


def memory(mode: str, steps: int, batch: int = 4) -> dict[str, Any]:
    from tracegrad.llm.base import find_engine
    from tracegrad.optim import TGD, TraceOptimizer
    from tracegrad.testing import MockLLM

    llm = mock_engine()
    mock = find_engine(llm, MockLLM)
    system = tg.Parameter(common.W1_PROMPT, role="system prompt", name="system_prompt")
    qa = tg.LLMCall(llm, system=system)
    loss_fn = tg.MetricLoss(common.metric, name="exact_match")
    if mode == "trace":
        prop, opt = tg.TracePropagator(), TraceOptimizer([system], llm)
    else:
        prop, opt = tg.TextualPropagator(llm), TGD([system], llm)
    data = common.questions(batch)

    samples = []
    every = max(1, steps // 10)
    started_here = not tracemalloc.is_tracing()
    if started_here:
        tracemalloc.start()
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        opt.zero_grad()
        losses = [loss_fn(qa(q), a) for q, a in data]
        tg.sum(losses).backward(propagator=prop)
        opt.step()
        system.value = common.W1_PROMPT  # every step does the same work
        if mock is not None:
            mock.reset()
        del losses
        if step % every == 0:
            gc.collect()
            samples.append({"step": step, "traced_bytes": tracemalloc.get_traced_memory()[0],
                            "rss_bytes": _rss()})
    elapsed = time.perf_counter() - t0
    if started_here:
        tracemalloc.stop()
    base, last = samples[0], samples[-1]
    return {
        "mode": mode, "steps": steps, "batch": batch, "elapsed_s": elapsed,
        "samples": samples,
        "traced_growth_bytes": last["traced_bytes"] - base["traced_bytes"],
        "rss_growth_bytes": last["rss_bytes"] - base["rss_bytes"],
        "calls_per_step": None,
    }


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--out")
    ap.add_argument("--memory-only", choices=["textual", "trace"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_only:
        common.emit(memory(args.memory_only, args.steps), args.out)
        return
    out: dict[str, Any] = {"backward": {}, "memory": {}}
    out["backward"]["batch"] = time_backward(lambda: graph_batch(args.nodes))
    out["backward"]["chain"] = time_backward(lambda: graph_chain(args.nodes))
    out["backward"]["chain_100_params"] = time_backward(
        lambda: graph_chain(args.nodes, params_every=max(1, args.nodes // 200)))
    for mode in ("textual", "trace"):
        # A fresh interpreter traced from its first allocation (-X tracemalloc): a table that
        # CPython re-allocates during the run (the interned-string dict, say) then counts as
        # the size difference, not as a new block whose predecessor tracemalloc never saw.
        proc = subprocess.run(
            [sys.executable, "-X", "tracemalloc=1", os.path.abspath(__file__),
             "--memory-only", mode, "--steps", str(args.steps)],
            check=True, capture_output=True, text=True, timeout=900)
        out["memory"][mode] = json.loads(proc.stdout)
    common.emit(out, args.out)


if __name__ == "__main__":
    main()
