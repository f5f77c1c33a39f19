"""Microsoft Trace (trace-opt==0.1.3.8, ``opto``) on the three benchmark workloads.

Run with the peers' venv (``benchmarks/setup_peers.sh``)::

    benchmarks/.peers-venv/bin/python benchmarks/peers/run_trace.py --url URL [--variant seq|threads]

How Trace is used (its own idioms, from its README and ``examples/``):

* LLM: Trace's default backend, ``opto.utils.llm.LLM`` = ``LiteLLM``, with
  ``TRACE_LITELLM_MODEL=openai/bench-model`` and ``OPENAI_BASE_URL``/``OPENAI_API_BASE``
  pointing at the server. LiteLLM caches nothing unless ``litellm.cache`` is set (it is
  not); its model-cost map is read from the bundled copy (``LITELLM_LOCAL_MODEL_COST_MAP``)
  so that importing it makes no network request.
* a forward LLM call is a ``@bundle()`` function whose inputs are the (trainable) prompt
  node and the question -- the pattern of Trace's BigBench example.
* workloads 1 and 2 (a minibatch): every example's output is combined with ``batchify``
  (the ``@bundle`` helper of Trace's own minibatch trainer, copied here because 0.1.3.8
  does not ship it), the per-example metric feedback is combined the same way, then
  ``optimizer.zero_feedback(); optimizer.backward(target, feedback); optimizer.step()``
  with ``OptoPrime`` (one LLM call per step). ``GRAPH.clear()`` starts each step, as in
  Trace's examples.
* workload 3: the judge is called outside the graph and returned by a ``@bundle``
  ``evaluate`` function, then backward and step -- the pattern of Trace's reproduction of
  TextGrad's solution optimization (``examples/textgrad_examples``).
* concurrency: 0.1.3.8 runs a minibatch's examples one after another (its examples loop;
  there is no parallel runner in this version): variant ``seq``, the one run_all uses.
  Concurrent forward passes do not work in 0.1.3.8: ``bundle`` records the nodes a call
  reads on a process-global stack (``USED_NODES``), so overlapping calls see each other's
  nodes and raise ``TraceMissingInputsError`` -- with threads (variant ``threads``) and
  with ``@bundle`` over an ``async def`` awaited through ``asyncio.gather`` (variant
  ``async``) alike, as soon as the server has latency. Both variants are kept so the
  failure can be reproduced.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402
from common import StepClock  # noqa: E402


def forward_all(fn, afn, items, variant: str):
    if variant == "async":
        async def gather():
            return await asyncio.gather(*[afn(x) for x in items])

        return asyncio.run(gather())
    if variant == "threads":  # fails in 0.1.3.8, see the module docstring
        with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
            return list(pool.map(fn, items))
    return [fn(x) for x in items]


def setup(url: str):
    os.environ["OPENAI_BASE_URL"] = url
    os.environ["OPENAI_API_BASE"] = url
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
    os.environ["TRACE_LITELLM_MODEL"] = f"openai/{common.MODEL}"
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def build(trace_mod):
    from opto.trace import bundle
    from opto.utils.llm import LLM

    llm = LLM()

    @bundle()
    def call_llm(system_prompt, message):
        """Call the language model with a system prompt and a user message; return its reply."""
        response = llm(messages=[{"role": "system", "content": system_prompt},
                                 {"role": "user", "content": message}])
        return response.choices[0].message.content

    @bundle()
    async def acall_llm(system_prompt, message):
        """Call the language model with a system prompt and a user message; return its reply."""
        import litellm

        response = await litellm.acompletion(
            model=llm.model_name,
            messages=[{"role": "system", "content": system_prompt},
                      {"role": "user", "content": message}])
        return response.choices[0].message.content

    @bundle()
    def batchify(*items):
        """Concatenate the items into a single string"""
        output = ""
        for i, item in enumerate(items):
            output += f"ID {[i]}: {item}\n"
        return output

    return llm, (call_llm, acall_llm), batchify


def combine(texts):
    return "".join(f"ID {[i]}: {t}\n" for i, t in enumerate(texts))


def w1(llm, call_llm, batchify, steps, variant, batch, clock) -> dict:
    from opto.optimizers import OptoPrime
    from opto.trace import GRAPH, node

    system = node(common.W1_PROMPT, trainable=True, name="system_prompt",
                  description="system prompt to the language model")
    opt = OptoPrime([system], llm=llm)
    data = common.questions(batch)
    for _ in range(steps):
        with clock:
            GRAPH.clear()

            def run(item):
                q, a = item
                out = call_llm[0](system, q)
                return out, common.metric(out.data, a)[1]

            async def arun(item):
                q, a = item
                out = await call_llm[1](system, q)
                return out, common.metric(out.data, a)[1]

            results = forward_all(run, arun, data, variant)
            target = batchify(*[o for o, _ in results])
            feedback = combine([f for _, f in results])
            opt.zero_feedback()
            opt.backward(target, feedback)
            opt.step()
    return {"values": {"qa": system.data}}


def w2(llm, call_llm, batchify, steps, variant, batch, clock) -> dict:
    from opto.optimizers import OptoPrime
    from opto.trace import GRAPH, node

    prompts = {k: node(v, trainable=True, name=f"{k}_prompt",
                       description=f"system prompt of the {k} step")
               for k, v in common.W2_PROMPTS.items()}
    opt = OptoPrime(list(prompts.values()), llm=llm)
    data = common.questions(batch, offset=100)
    for _ in range(steps):
        with clock:
            GRAPH.clear()

            def run(item):
                q, a = item
                h = call_llm[0](prompts["extract"], q)
                h = call_llm[0](prompts["solve"], h)
                h = call_llm[0](prompts["format"], h)
                return h, common.metric(h.data, a)[1]

            async def arun(item):
                q, a = item
                h = await call_llm[1](prompts["extract"], q)
                h = await call_llm[1](prompts["solve"], h)
                h = await call_llm[1](prompts["format"], h)
                return h, common.metric(h.data, a)[1]

            results = forward_all(run, arun, data, variant)
            target = batchify(*[o for o, _ in results])
            feedback = combine([f for _, f in results])
            opt.zero_feedback()
            opt.backward(target, feedback)
            opt.step()
    return {"values": {k: p.data for k, p in prompts.items()}}


def w3(llm, iterations, clock) -> dict:
    from opto.optimizers import OptoPrime
    from opto.trace import bundle, node

    answer = node(common.W3_ANSWER, trainable=True, name="response",
                  description="solution to the math question")
    question = node(common.W3_QUESTION, trainable=False, name="question")
    opt = OptoPrime([answer], llm=llm)
    for _ in range(iterations):
        with clock:
            opt.zero_feedback()
            judged = llm(messages=[{"role": "system", "content": common.W3_JUDGE},
                                   {"role": "user", "content": answer.data}])
            verdict = judged.choices[0].message.content

            @bundle()
            def evaluate(question, response):
                """evaluation of the solution to the math question"""
                return verdict

            out = evaluate(question, answer)
            opt.backward(out, "Improve correctness of the solution.")
            opt.step()
    return {"values": {"solution": answer.data}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--variant", default="seq", choices=["seq", "async", "threads"])
    ap.add_argument("--workloads", default="w1,w2,w3")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch1", type=int, default=common.W1_BATCH)
    ap.add_argument("--batch2", type=int, default=common.W2_BATCH)
    ap.add_argument("--iterations", type=int, default=common.W3_ITERATIONS)
    ap.add_argument("--out")
    args = ap.parse_args()

    setup(args.url)
    t_import = time.perf_counter()
    import opto.trace as trace_mod

    llm, call_llm, batchify = build(trace_mod)
    import_s = time.perf_counter() - t_import

    warm = StepClock()
    with warm:
        llm(messages=[{"role": "system", "content": "[warmup]"},
                      {"role": "user", "content": "Warm-up: say OK."}])

    result: dict = {"framework": "trace", "variant": args.variant, "import_s": import_s,
                    "warmup": warm.steps[0], "workloads": {}}
    for w in args.workloads.split(","):
        clock = StepClock()
        if w == "w1":
            info = w1(llm, call_llm, batchify, args.steps, args.variant, args.batch1, clock)
            expected = {"qa": common.IMPROVED["qa"]}
        elif w == "w2":
            info = w2(llm, call_llm, batchify, args.steps, args.variant, args.batch2, clock)
            expected = {k: common.IMPROVED[k] for k in common.W2_PROMPTS}
        else:
            info = w3(llm, args.iterations, clock)
            expected = {"solution": common.IMPROVED["solution"]}
        result["workloads"][w] = {"steps": clock.steps,
                                  "problems": common.check_values(info["values"], expected)}
    common.emit(result, args.out)


if __name__ == "__main__":
    main()
