"""TextGrad peer runner: prompt optimization as in TextGrad's published BBH/GSM8K setup.

    PEERS_PYTHON benchmarks/real/peer_textgrad.py --config CFG.json --out RES.json

``run.py`` writes the configuration (see ``peer_common``) and reads the result; this file
imports textgrad, never tracegrad. The setup follows TextGrad's paper and its
``evaluation/prompt_optimization.py`` (read, not copied): a system-prompt variable
(``requires_grad``) in front of a ``tg.BlackboxLLM`` running the task model; the metric as
a ``tg.autograd.StringBasedFunction`` returning the 0/1 score; ``tg.sum`` of a batch's
losses, ``backward()`` through the optimizer model (set as TextGrad's backward engine),
``tg.TextualGradientDescent.step()``; after every step the prompt is scored on the
validation set and reverted when it scores lower than the last kept one. Batches of
``batch_size`` (3) from a shuffled training set; the published loop runs 3 epochs and stops
each epoch after 4 batches, so ``steps=12`` is the published run (``options.
steps_per_epoch`` changes the 4).

The rollout budget: each step costs ``batch_size`` rollouts plus one per validation
example; a step is started only while the budget has room for all of it, and only while
the dollar budget is not spent (checked between steps).

Engines: TextGrad's ``ChatExternalClient`` around ``openai.OpenAI(base_url=...)`` (its
documented way to reach an OpenAI-compatible server) for both models. Its response cache
is TextGrad's default and stays on, in a fresh directory per run (``XDG_CACHE_HOME``), so
repeated identical prompts inside a run are free, as in tracegrad; its call log
(``TEXTGRAD_LOG_DIR``) goes to the run's directory. Calls and tokens are counted by a
wrapper on the client's ``chat.completions.create``: only requests that reach the server.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peer_common as pc  # noqa: E402

ROLE = ("structured system prompt to a somewhat capable language model that specifies the "
        "behavior and strategies for the QA task")


def _metered_client(meter: pc.Meter, base_url: str | None) -> Any:
    import openai

    key = os.environ.get("OPENAI_API_KEY") or ("sk-offline" if base_url else None)
    client = openai.OpenAI(base_url=base_url, api_key=key) if base_url else openai.OpenAI()
    completions = client.chat.completions
    create = completions.create

    def metered_create(*args: Any, **kwargs: Any) -> Any:
        resp = create(*args, **kwargs)
        u = getattr(resp, "usage", None)
        meter.llm_call(kwargs.get("model", "?"), getattr(u, "prompt_tokens", 0),
                       getattr(u, "completion_tokens", 0))
        return resp

    completions.create = metered_create  # the instance attribute shadows the method
    return client


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    cfg = pc.read_config(a.config)
    res = pc.result_skeleton(cfg)
    meter = pc.Meter(cfg["prices"], cfg["budget_usd"])
    work = Path(cfg["workdir"])
    work.mkdir(parents=True, exist_ok=True)
    # before textgrad is imported: it opens its log file and cache paths at import/creation
    os.environ["TEXTGRAD_LOG_DIR"] = str(work / "textgrad-logs")
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")
    t0 = time.perf_counter()
    try:
        _run(cfg, meter, res)
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()[-4000:]
    res.update(meter.totals())
    res["wall_s"] = round(time.perf_counter() - t0, 2)
    res["versions"] = pc.versions("textgrad", "openai")
    pc.write_result(a.out, res)
    return 0


def _run(cfg: dict[str, Any], meter: pc.Meter, res: dict[str, Any]) -> None:
    t_import = time.perf_counter()
    import textgrad as tg
    from textgrad.autograd import StringBasedFunction
    from textgrad.engine.local_model_openai_api import ChatExternalClient

    res["import_s"] = round(time.perf_counter() - t_import, 2)
    opts = cfg.get("options") or {}
    client = _metered_client(meter, cfg["base_url"])
    task_engine = ChatExternalClient(client=client, model_string=pc.bare_model(cfg["model"]))
    opt_engine = ChatExternalClient(client=client,
                                    model_string=pc.bare_model(cfg["optimizer_model"]))
    tg.set_backward_engine(opt_engine, override=True)
    score_fn = pc.METRICS[cfg["metric"]]
    threads = int(cfg["num_threads"])

    def score_only(prediction: Any, ground_truth_answer: Any) -> int:
        meter.rollout()
        return int(score_fn(prediction.value, ground_truth_answer.value)[0])

    eval_fn = StringBasedFunction(score_only, function_purpose=(
        "The runtime of string-based function that checks if the prediction is correct."))
    system_prompt = tg.Variable(cfg["instruction"], requires_grad=True, role_description=ROLE)
    model = tg.BlackboxLLM(task_engine, system_prompt)
    optimizer = tg.TextualGradientDescent(engine=opt_engine, parameters=[system_prompt])

    def one(row: dict[str, str]) -> float:
        x = tg.Variable(row["question"], requires_grad=False,
                        role_description="query to the language model")
        meter.rollout()
        return score_fn(model(x).value, row["answer"])[0]

    def accuracy(rows: list[dict[str, str]]) -> float:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            scores = list(pool.map(one, rows))
        return sum(scores) / len(scores) if scores else 0.0

    train, val, test = cfg["train"], cfg["val"], cfg["test"]
    budget, batch = int(cfg["metric_budget"]), int(cfg["batch_size"])
    steps, per_epoch = int(cfg["steps"]), int(opts.get("steps_per_epoch", 4))
    res["settings"] = {"steps": steps, "steps_per_epoch": per_epoch, "batch_size": batch,
                       "validation_revert": True, "metric_budget": budget,
                       "num_threads": threads}
    meter.phase = "eval"
    res["test_before"] = accuracy(test)
    meter.phase = "optimize"
    t_opt = time.perf_counter()
    kept_prompt, kept_val = system_prompt.get_value(), accuracy(val)
    res["val_before"] = kept_val
    rng = random.Random(int(cfg["seed"]))
    done, reverted, stop = 0, 0, "steps"
    while train and done < steps and stop == "steps":
        order = list(train)
        rng.shuffle(order)
        for i in range(0, len(order), batch):
            if done >= steps or i // batch >= per_epoch:
                break
            rows = order[i:i + batch]
            if meter.metric_calls() + len(rows) + len(val) > budget:
                stop = "metric_budget"
                break
            if meter.over_budget():
                stop = "budget_usd"
                break
            optimizer.zero_grad()
            losses = []
            for row in rows:
                x = tg.Variable(row["question"], requires_grad=False,
                                role_description="query to the language model")
                y = tg.Variable(row["answer"], requires_grad=False,
                                role_description="correct answer for the query")
                losses.append(eval_fn(inputs={"prediction": model(x), "ground_truth_answer": y}))
            tg.sum(losses).backward()
            optimizer.step()
            done += 1
            new_val = accuracy(val)
            if new_val < kept_val:
                system_prompt.set_value(kept_prompt)
                reverted += 1
            else:
                kept_prompt, kept_val = system_prompt.get_value(), new_val
    res.update({"steps_done": done, "steps_reverted": reverted, "stopped_reason": stop,
                "val_best": kept_val, "final_instruction": system_prompt.get_value(),
                "optimize_s": round(time.perf_counter() - t_opt, 2)})
    meter.phase = "eval"
    res["test_after"] = accuracy(test)


if __name__ == "__main__":
    raise SystemExit(main())
