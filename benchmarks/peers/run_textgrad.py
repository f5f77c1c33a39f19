"""TextGrad (textgrad==0.1.8) on the three benchmark workloads.

Run with the peers' venv (``benchmarks/setup_peers.sh``)::

    benchmarks/.peers-venv/bin/python benchmarks/peers/run_textgrad.py --url URL [--variant threads|seq]

How TextGrad is used (its own idioms, from its README and ``evaluation/*.py``):

* engine: ``ChatExternalClient`` (TextGrad's documented way to use an OpenAI-compatible
  server) around ``openai.OpenAI(base_url=URL)``; the same engine is the backward engine.
* cache: TextGrad caches every engine call in a diskcache under
  ``platformdirs.user_cache_dir("textgrad")``. The runner points that at a fresh empty
  directory (``XDG_CACHE_HOME``, set by run_all) *and* turns the lookup off, so every call
  reaches the server (the server's request count proves it).
* logging: importing textgrad makes it log every LLM call as a JSON line to
  ``$TEXTGRAD_LOG_DIR`` (default ``./logs/``). That is TextGrad's default and stays on (its
  cost is part of TextGrad's overhead); run_all points the directory at a scratch dir.
* workload 1: ``tg.BlackboxLLM(engine, system_prompt)`` per example; the metric is a
  ``tg.autograd.StringBasedFunction`` (TextGrad's metric-based loss, as in
  ``evaluation/prompt_optimization.py``), ``tg.sum(losses).backward()``,
  ``tg.TextualGradientDescent.step()``.
* workload 2: three BlackboxLLMs chained, same loss.
* workload 3: ``tg.TextLoss(judge)`` on the answer variable, backward, TGD step (as in
  ``evaluation/solution_optimization.py``).
* concurrency: TextGrad 0.1.8 has none of its own (backward and step are sequential
  loops). Its evaluation code runs examples in a ThreadPoolExecutor; variant ``threads``
  does the same for the forward pass of a training step (the most favourable setting for
  TextGrad); variant ``seq`` runs the forward pass in a plain loop, as its training
  script does.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402
from common import StepClock  # noqa: E402


def build_engine(url: str):
    import openai
    from textgrad.engine.local_model_openai_api import ChatExternalClient

    client = openai.OpenAI(base_url=url, api_key=os.environ.get("OPENAI_API_KEY", "sk-bench"))
    engine = ChatExternalClient(client=client, model_string=common.MODEL)
    # Caching off: every call must reach the server.
    engine._check_cache = lambda prompt: None
    engine._save_cache = lambda prompt, response: None
    return engine


def forward_all(fn, items, variant: str):
    if variant == "threads":
        with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
            return list(pool.map(fn, items))
    return [fn(x) for x in items]


def eval_fn_factory(tg):
    from textgrad.autograd import StringBasedFunction

    def metric_feedback(prediction, ground_truth_answer):
        _, text = common.metric(prediction.value, int(ground_truth_answer.value))
        return text

    return StringBasedFunction(
        metric_feedback, function_purpose="The runtime of string-based function that checks if "
                                          "the prediction is correct.")


def w1(tg, engine, steps: int, variant: str, batch: int, clock: StepClock) -> dict:
    system = tg.Variable(common.W1_PROMPT, requires_grad=True,
                         role_description="system prompt to the language model")
    model = tg.BlackboxLLM(engine, system)
    opt = tg.TextualGradientDescent(engine=engine, parameters=[system])
    eval_fn = eval_fn_factory(tg)
    data = common.questions(batch)
    for _ in range(steps):
        with clock:
            opt.zero_grad()

            def run(item):
                q, a = item
                x = tg.Variable(q, requires_grad=False, role_description="query to the language model")
                y = tg.Variable(str(a), requires_grad=False, role_description="correct answer for the query")
                response = model(x)
                return eval_fn(inputs=dict(prediction=response, ground_truth_answer=y))

            losses = forward_all(run, data, variant)
            total = tg.sum(losses)
            total.backward()
            opt.step()
    return {"values": {"qa": system.value}}


def w2(tg, engine, steps: int, variant: str, batch: int, clock: StepClock) -> dict:
    prompts = {k: tg.Variable(v, requires_grad=True, role_description=f"system prompt of the {k} step")
               for k, v in common.W2_PROMPTS.items()}
    models = {k: tg.BlackboxLLM(engine, p) for k, p in prompts.items()}
    opt = tg.TextualGradientDescent(engine=engine, parameters=list(prompts.values()))
    eval_fn = eval_fn_factory(tg)
    data = common.questions(batch, offset=100)
    for _ in range(steps):
        with clock:
            opt.zero_grad()

            def run(item):
                q, a = item
                x = tg.Variable(q, requires_grad=False, role_description="question")
                y = tg.Variable(str(a), requires_grad=False, role_description="correct answer")
                h = models["extract"](x)
                h = models["solve"](h)
                h = models["format"](h)
                return eval_fn(inputs=dict(prediction=h, ground_truth_answer=y))

            losses = forward_all(run, data, variant)
            tg.sum(losses).backward()
            opt.step()
    return {"values": {k: p.value for k, p in prompts.items()}}


def w3(tg, engine, iterations: int, clock: StepClock) -> dict:
    answer = tg.Variable(common.W3_ANSWER, requires_grad=True,
                         role_description="solution to the math question")
    loss_fn = tg.TextLoss(common.W3_JUDGE, engine=engine)
    opt = tg.TextualGradientDescent(engine=engine, parameters=[answer])
    for _ in range(iterations):
        with clock:
            opt.zero_grad()
            loss = loss_fn(answer)
            loss.backward()
            opt.step()
    return {"values": {"solution": answer.value}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--variant", default="threads", choices=["threads", "seq"])
    ap.add_argument("--workloads", default="w1,w2,w3")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch1", type=int, default=common.W1_BATCH)
    ap.add_argument("--batch2", type=int, default=common.W2_BATCH)
    ap.add_argument("--iterations", type=int, default=common.W3_ITERATIONS)
    ap.add_argument("--out")
    args = ap.parse_args()

    t_import = time.perf_counter()
    import textgrad as tg

    import_s = time.perf_counter() - t_import
    engine = build_engine(args.url)
    tg.set_backward_engine(engine, override=True)

    warm = StepClock()
    with warm:  # first call: connection set-up and lazy imports, not part of any step
        engine("Warm-up: say OK.", system_prompt="[warmup]")

    result: dict = {"framework": "textgrad", "variant": args.variant, "import_s": import_s,
                    "warmup": warm.steps[0], "workloads": {}}
    for w in args.workloads.split(","):
        clock = StepClock()
        if w == "w1":
            info = w1(tg, engine, args.steps, args.variant, args.batch1, clock)
            expected = {"qa": common.IMPROVED["qa"]}
        elif w == "w2":
            info = w2(tg, engine, args.steps, args.variant, args.batch2, clock)
            expected = {k: common.IMPROVED[k] for k in common.W2_PROMPTS}
        else:
            info = w3(tg, engine, args.iterations, clock)
            expected = {"solution": common.IMPROVED["solution"]}
        result["workloads"][w] = {"steps": clock.steps,
                                  "problems": common.check_values(info["values"], expected)}
    common.emit(result, args.out)


if __name__ == "__main__":
    main()
