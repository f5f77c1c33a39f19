"""Run every benchmark and write benchmarks/RESULTS.md and benchmarks/results.json.

    bash benchmarks/setup_peers.sh                  # once: TextGrad and Trace from PyPI
    python benchmarks/run_all.py      # about 11 minutes on 2 cores

One latency-simulating server (``server.py``) runs in this process; every framework runs
in its own process (``run_tracegrad.py`` with this interpreter, ``peers/run_*.py`` with
``benchmarks/.peers-venv``) against it. All numbers about calls, tokens and the critical
path come from the server's request log, sliced by the wall-clock window of each step
that the runner reports; wall time is the runner's own clock around the step.

``--quick`` runs everything once at small sizes (a smoke test, not a measurement).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from server import BenchServer, summarize  # noqa: E402

PEERS_PY = os.path.join(HERE, ".peers-venv", "bin", "python")

# name -> (family, runner, variant, workloads, steps, primary)
CONFIGS: dict[str, dict[str, Any]] = {
    "tracegrad textual": {"family": "textual", "runner": "tracegrad", "variant": "textual"},
    "tracegrad batched": {"family": "textual", "runner": "tracegrad", "variant": "batched"},
    "tracegrad trace": {"family": "trace", "runner": "tracegrad", "variant": "trace"},
    "textgrad": {"family": "textual", "runner": "textgrad", "variant": "threads"},
    "textgrad seq-forward": {"family": "textual", "runner": "textgrad", "variant": "seq",
                             "workloads": "w1,w2", "repeats": 1},
    "trace-opt": {"family": "trace", "runner": "trace", "variant": "seq"},
    # tracegrad's former default LLM(max_concurrency=8) (now 32): a batch of 16 in two waves.
    "tracegrad textual, default max_concurrency 8": {
        "family": "textual", "runner": "tracegrad", "variant": "textual", "workloads": "w1,w2",
        "repeats": 1, "args": ["--max-concurrency", "8"]},
}
TRACEGRAD = ["tracegrad textual", "tracegrad batched", "tracegrad trace"]

# Longest chain of dependent LLM calls a step needs (see RESULTS.md, "Critical path").
#   textual family: forward depth + one feedback call per LLM node on the longest
#                   parameter-to-loss path + one update;  trace family: forward depth + update.
LIMIT_LEVELS = {
    "w1": {"textual": 3, "trace": 2},
    "w2": {"textual": 7, "trace": 4},
    "w3": {"textual": 2, "trace": 2},  # per iteration: judge -> update (the verdict is feedback)
}
# W1 minibatches run at the main latency with the concurrency ceiling raised to the batch
# (``--max-concurrency max(32, batch)``), so that the critical-path limit -- which assumes a
# whole level in flight at once -- is reachable; targets: x1.3 at 16 and 64, x1.5 at 256.
LARGE_BATCHES = (16, 64, 256)
LARGE_TARGET = {16: 1.3, 64: 1.3, 256: 1.5}


def large_config(name: str, batch: int) -> dict[str, Any]:
    cfg = dict(CONFIGS[name])
    cfg["args"] = ["--max-concurrency", str(max(32, batch))]
    return cfg


def large_summary(runs: list[dict[str, Any]], name: str, lat: float) -> dict[str, Any]:
    """Medians over the steady steps of W1 at one batch size, with both limits.

    ``limit_s`` is the workload's critical-path limit (forward + feedback + update levels);
    when the batch's feedback is over the optimizer's budget the step also makes one
    feedback-summary call, a dependent level of its own: ``algorithm_limit_s`` counts it.
    """
    agg = aggregate(runs, "w1") or {}
    levels = LIMIT_LEVELS["w1"][CONFIGS[name]["family"]]
    summaries = (agg.get("kinds") or {}).get("tracegrad.summary") or 0
    limit = levels * lat
    alg = (levels + (1 if summaries else 0)) * lat
    wall = agg.get("wall_s")
    rss = med([r.get("max_rss_kib") for r in runs])
    return {"wall_s": wall, "calls": agg.get("calls"), "depth": agg.get("depth"),
            "kinds": agg.get("kinds"), "samples": agg.get("samples"),
            "wall_samples": agg.get("wall_samples"), "summary_calls": summaries,
            "limit_s": limit, "algorithm_limit_s": alg,
            "x_limit": wall / limit if wall and limit else None,
            "x_algorithm_limit": wall / alg if wall and alg else None,
            "max_rss_mib": (rss / 1024 if rss else None)}


def print_ratios(r: dict[str, Any]) -> None:
    """Every tracegrad step time as a ratio to its critical-path limit, on stdout."""
    lat, key = main_latency(r)
    print(f"ratios to the critical-path limit at {key} (wall / limit):")
    for w in ("w1", "w2", "w3"):
        for mode in TRACEGRAD:
            wall = _get(r, key, mode, w, "wall_s")
            limit = LIMIT_LEVELS[w][CONFIGS[mode]["family"]] * lat
            if wall and limit:
                print(f"  {mode:18} {WORKLOAD_TITLES[w]:26} {wall:.3f} s / {limit:.2f} s = "
                      f"{wall / limit:.2f}x")
    for mode, per in (r.get("large") or {}).items():
        for b, v in sorted(per.items(), key=lambda kv: int(kv[0])):
            if v.get("x_limit") is None:
                continue
            print(f"  {mode:18} W1 batch {b:<17} {v['wall_s']:.3f} s / {v['limit_s']:.2f} s = "
                  f"{v['x_limit']:.2f}x (with the summary level: {v['x_algorithm_limit']:.2f}x)")


OPTIMIZER_KINDS = ("tracegrad.tgd", "tracegrad.trace", "textgrad.optimizer", "trace.optimizer")


def runner_cmd(cfg: dict[str, Any], url: str, out: str, **over: Any) -> list[str]:
    workloads = over.get("workloads") or cfg.get("workloads", "w1,w2,w3")
    steps = over.get("steps") or cfg.get("steps", 2)
    if cfg["runner"] == "tracegrad":
        cmd = [sys.executable, os.path.join(HERE, "run_tracegrad.py"), "--mode", cfg["variant"]]
    else:
        cmd = [PEERS_PY, os.path.join(HERE, "peers", f"run_{cfg['runner']}.py"),
               "--variant", cfg["variant"]]
    cmd += ["--url", url, "--workloads", workloads, "--steps", str(steps), "--out", out]
    for k in ("batch1", "batch2", "iterations"):
        if over.get(k):
            cmd += [f"--{k}", str(over[k])]
    return cmd + list(cfg.get("args", []))


def run_one(server: BenchServer, name: str, cfg: dict[str, Any], **over: Any) -> dict[str, Any]:
    env = dict(os.environ)
    env.update({
        "OPENAI_API_KEY": "sk-bench",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TRACEGRAD_NO_CACHE": "1",
        "PYTHONHASHSEED": "0",
    })
    for k in ("OPENAI_BASE_URL", "OPENAI_API_BASE"):
        env.pop(k, None)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        env["XDG_CACHE_HOME"] = tmp  # TextGrad's diskcache lands here: fresh and empty
        env["TEXTGRAD_LOG_DIR"] = os.path.join(tmp, "textgrad-logs")  # it logs every call (default on)
        out = os.path.join(tmp, "result.json")
        t0 = time.time()
        proc = subprocess.run(runner_cmd(cfg, server.url, out, **over), env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
        t1 = time.time()
        if proc.returncode != 0 or not os.path.exists(out):
            tail = (proc.stderr or proc.stdout)[-3000:]
            raise RuntimeError(f"{name} failed (exit {proc.returncode}):\n{tail}")
        with open(out, encoding="utf-8") as f:
            res = json.load(f)
    res["name"] = name
    all_entries = server.entries(t0, t1)
    in_steps = 0
    for wres in res["workloads"].values():
        for st in wres["steps"]:
            entries = server.entries(st["t0"], st["t1"])
            in_steps += len(entries)
            st.update(summarize(entries))
    warm = server.entries(res["warmup"]["t0"], res["warmup"]["t1"])
    res["outside_steps"] = len(all_entries) - in_steps - len(warm)
    return res


def valid(res: dict[str, Any]) -> list[str]:
    issues = []
    for w, wres in res["workloads"].items():
        issues += [f"{w}: {p}" for p in wres.get("problems", [])]
        for st in wres["steps"]:
            if st["unknown"]:
                issues.append(f"{w}: {st['unknown']} request(s) the server did not recognise")
            if st["repairs"]:
                issues.append(f"{w}: {st['repairs']} repair request(s)")
    if res.get("outside_steps"):
        issues.append(f"{res['outside_steps']} request(s) outside any step window")
    return issues


def med(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def steady(steps: list[dict[str, Any]], workload: str) -> list[dict[str, Any]]:
    """W1/W2: the steps after the first (the first one also opens the HTTP connections)."""
    return steps[1:] if workload != "w3" and len(steps) > 1 else steps


def aggregate(runs: list[dict[str, Any]], workload: str) -> dict[str, Any] | None:
    steps = [st for r in runs if workload in r["workloads"]
             for st in steady(r["workloads"][workload]["steps"], workload)]
    if not steps:
        return None
    agg = {k: med([st[k] for st in steps]) for k in
           ("wall_s", "calls", "prompt_tokens", "completion_tokens", "depth")}
    kinds: dict[str, list[int]] = {}
    for st in steps:
        for k in set(kinds) | set(st["kinds"]):
            kinds.setdefault(k, [])
    for k in kinds:
        kinds[k] = [st["kinds"].get(k, 0) for st in steps]
    agg["kinds"] = {k: med(v) for k, v in kinds.items()}
    agg["samples"] = len(steps)
    agg["wall_samples"] = [round(st["wall_s"], 4) for st in steps]
    agg["first_step_wall_s"] = med([r["workloads"][workload]["steps"][0]["wall_s"]
                                    for r in runs if workload in r["workloads"]])
    if workload == "w3":  # also the whole 5-iteration run, median over runs
        totals = [sum(st["wall_s"] for st in r["workloads"]["w3"]["steps"])
                  for r in runs if "w3" in r["workloads"]]
        agg["total_wall_s"] = med(totals)
        agg["total_calls"] = med([sum(st["calls"] for st in r["workloads"]["w3"]["steps"])
                                  for r in runs if "w3" in r["workloads"]])
    return agg


# -- RESULTS.md ---------------------------------------------------------------------------------


def fmt(x: Any, nd: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and not x.is_integer():
        return f"{x:.{nd}f}"
    return f"{int(x):,}" if isinstance(x, (int, float)) else str(x)


def spread(a: dict[str, Any]) -> str:
    """The wall time as "median [min-max]" over the steady steps (one sample: the median)."""
    xs = a.get("wall_samples") or []
    if len(xs) < 2:
        return f"{a['wall_s']:.3f}"
    return f"{a['wall_s']:.3f} [{min(xs):.3f}-{max(xs):.3f}]"


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    versions = {}
    if os.path.exists(PEERS_PY):
        code = ("import importlib.metadata as m, json, sys; print(json.dumps({p: m.version(p) for p in "
                "['textgrad', 'trace-opt', 'litellm', 'openai']} | {'python': sys.version.split()[0]}))")
        try:
            versions = json.loads(subprocess.run([PEERS_PY, "-c", code], capture_output=True,
                                                 text=True, timeout=60).stdout)
        except (ValueError, subprocess.SubprocessError):
            versions = {}
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "tracegrad"], cwd=ROOT,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    import openai

    import tracegrad

    return {
        "nproc": os.cpu_count(), "cpu": cpu, "platform": platform.platform(),
        "python": platform.python_version(), "tracegrad": tracegrad.__version__,
        "tracegrad_commit": commit + (" (with uncommitted changes in tracegrad/)" if dirty else ""),
        "openai_tracegrad_venv": openai.__version__, "peers": versions,
    }


QUALITY_HEADING = "## Optimization quality (SIMULATED)"


def write_results_md(out_dir: str, text: str) -> None:
    """RESULTS.md is this script's tables plus the quality section that
    ``benchmarks/quality`` results are written into by hand: that section, if the file
    has one, is kept as it is. Written to a temporary name and renamed, so an
    interrupted run never leaves half a file."""
    path = os.path.join(out_dir, "RESULTS.md")
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    at = old.find(QUALITY_HEADING)
    if at >= 0:
        text = text.rstrip("\n") + "\n\n" + old[at:]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--latencies", default="0.2,0")
    ap.add_argument("--quick", action="store_true", help="one small run of everything (smoke test)")
    ap.add_argument("--no-peers", action="store_true", help="tracegrad only")
    ap.add_argument("--out-dir", default=HERE)
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite RESULTS.md from an existing results.json (no runs)")
    args = ap.parse_args()
    started = time.time()
    if args.render_only:
        with open(os.path.join(args.out_dir, "results.json")) as f:
            results = json.load(f)
        results["targets"] = targets(results)
        write_results_md(args.out_dir, render(results))
        return

    peers = not args.no_peers
    if peers and not os.path.exists(PEERS_PY):
        sys.exit(f"{PEERS_PY} not found: run `bash benchmarks/setup_peers.sh` first (or --no-peers)")
    configs = {k: v for k, v in CONFIGS.items() if peers or v["runner"] == "tracegrad"}
    latencies = [float(x) for x in args.latencies.split(",")]
    repeats = args.repeats
    over: dict[str, Any] = {}
    prompt_batches = [4, 16, 64]
    scale_args = ["--steps", "1000"]
    large_batches, large_repeats = list(LARGE_BATCHES), max(1, min(repeats, 2))
    chain_args = ["--nodes", "10000", "--runs", "3"]
    if args.quick:
        repeats, latencies = 1, [0.02]
        over = {"steps": 1, "batch1": 4, "batch2": 2, "iterations": 2}
        prompt_batches = [2, 4]
        scale_args = ["--steps", "20", "--nodes", "1000"]
        large_batches, large_repeats = [4, 8], 1
        chain_args = ["--nodes", "1000", "--runs", "1"]

    results: dict[str, Any] = {"runs": {}, "summary": {}, "prompt_size": {}, "scale": {},
                               "large": {}, "chain": {}}
    invalid: list[str] = []
    with BenchServer(0.0) as server:
        for lat in latencies:
            server.set_latency(lat)
            key = f"{int(lat * 1000)}ms"
            runs: dict[str, list[dict[str, Any]]] = {n: [] for n in configs}
            for rep in range(repeats):
                for name, cfg in configs.items():
                    if rep >= cfg.get("repeats", repeats):
                        continue
                    print(f"[{time.time() - started:6.0f}s] {key} run {rep + 1}/{repeats}: {name}",
                          flush=True)
                    res = run_one(server, name, cfg, **over)
                    invalid += [f"{key} {name} run {rep + 1}: {i}" for i in valid(res)]
                    runs[name].append(res)
            results["runs"][key] = runs
            results["summary"][key] = {
                name: {w: aggregate(rs, w) for w in ("w1", "w2", "w3")} for name, rs in runs.items()
            }

        # optimizer prompt size against batch size (workload 1, one step, no latency)
        server.set_latency(0.0)
        for name, cfg in configs.items():
            if cfg.get("repeats") == 1:  # the secondary variants
                continue
            extra = [prompt_batches[-1] * 4] if cfg["runner"] == "tracegrad" else []
            for b in prompt_batches + extra:
                print(f"[{time.time() - started:6.0f}s] prompt size: {name} batch {b}", flush=True)
                res = run_one(server, name, cfg, workloads="w1", steps=1, batch1=b)
                invalid += [f"prompt-size {name} batch {b}: {i}" for i in valid(res)]
                st = res["workloads"]["w1"]["steps"][0]
                entries = server.entries(st["t0"], st["t1"])
                opt = [e["prompt_tokens"] for e in entries if e["kind"] in OPTIMIZER_KINDS]
                summ = [e["prompt_tokens"] for e in entries if e["kind"] == "tracegrad.summary"]
                back = [e["prompt_tokens"] for e in entries
                        if e["kind"] in ("tracegrad.backward", "textgrad.gradient")]
                results["prompt_size"].setdefault(name, {})[str(b)] = {
                    "optimizer_max_prompt_tokens": max(opt, default=0),
                    "optimizer_calls": len(opt),
                    "summary_max_prompt_tokens": max(summ, default=0),
                    "summary_calls": len(summ),
                    "feedback_max_prompt_tokens": max(back, default=0),
                    "feedback_calls": len(back),
                    "calls": st["calls"],
                }
        lat = max(latencies)
        server.set_latency(lat)
        for b in large_batches:
            for name in TRACEGRAD:
                print(f"[{time.time() - started:6.0f}s] large batch: {name} batch {b} at "
                      f"{int(lat * 1000)}ms", flush=True)
                runs_b = [run_one(server, name, large_config(name, b), workloads="w1", steps=2,
                                  batch1=b) for _ in range(large_repeats)]
                for res in runs_b:
                    invalid += [f"large {name} batch {b}: {i}" for i in valid(res)]
                results["large"].setdefault(name, {})[str(b)] = large_summary(runs_b, name, lat)
        results["server_check"] = server.verify()

    print(f"[{time.time() - started:6.0f}s] scale and memory", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "scale.json")
        subprocess.run([sys.executable, os.path.join(HERE, "scale.py"), *scale_args, "--out", out],
                       check=True, cwd=ROOT, timeout=900)
        with open(out) as f:
            results["scale"] = json.load(f)

    print(f"[{time.time() - started:6.0f}s] {chain_args[1]}-node chain", flush=True)
    proc = subprocess.run([sys.executable, os.path.join(HERE, "chain.py"), *chain_args, "--json"],
                          check=True, cwd=ROOT, timeout=900, capture_output=True, text=True)
    results["chain"] = json.loads(proc.stdout)

    results["invalid"] = invalid
    results["machine"] = machine()
    results["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    results["command"] = " ".join(["python", "benchmarks/run_all.py", *sys.argv[1:]])
    results["elapsed_s"] = time.time() - started
    results["config"] = {"repeats": repeats, "latencies": latencies, "quick": args.quick,
                         "limit_levels": LIMIT_LEVELS, "prompt_batches": prompt_batches}
    results["targets"] = targets(results)

    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    write_results_md(args.out_dir, render(results))
    print_ratios(results)
    print(f"done in {results['elapsed_s']:.0f}s; wrote {args.out_dir}/RESULTS.md and results.json")
    if invalid:
        print("INVALID RUNS:\n  " + "\n  ".join(invalid))


# -- targets ---------------------------------------------------------------------------------------

TEXTUAL_MODES = ["tracegrad textual", "tracegrad batched"]
# What bounds the optimizer request, by tracegrad mode (the optimizers' defaults, in characters).
PROMPT_BUDGET = {
    "textual": (6000, "TGD feedback_budget 6,000 chars"),
    "batched": (6000, "TGD feedback_budget 6,000 chars"),
    "trace": (18000, "TraceOptimizer max_listing_chars 12,000 + feedback_budget 6,000 chars"),
}


def _get(r: dict[str, Any], key: str, name: str, w: str, field: str) -> Any:
    return (((r["summary"].get(key) or {}).get(name) or {}).get(w) or {}).get(field)


def main_latency(r: dict[str, Any]) -> tuple[float, str]:
    lat = max(r["config"]["latencies"])
    return lat, f"{int(lat * 1000)}ms"


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 7's targets. Workloads 1 and 2 are about tracegrad's textual mode (per-example
    and batched feedback); the trace mode is compared in the speed-up table."""
    out: list[dict[str, Any]] = []
    lat, key = main_latency(r)
    zero = "0ms" if "0ms" in r["summary"] else None

    def get(name: str, w: str, field: str) -> Any:
        return _get(r, key, name, w, field)

    for w in ("w1", "w2"):
        tg_calls = get("textgrad", w, "calls")
        for mode in TEXTUAL_MODES:
            calls = get(mode, w, "calls")
            if calls is not None and tg_calls:
                ratio = calls / tg_calls
                out.append({"target": f"{w.upper()}: {mode} LLM calls per step <= 0.5x TextGrad's",
                            "value": f"{fmt(calls)} / {fmt(tg_calls)} = {ratio:.2f}x",
                            "met": ratio <= 0.5, "kind": "calls", "workload": w, "mode": mode})
        for mode in TEXTUAL_MODES:
            wall = get(mode, w, "wall_s")
            if wall is None:
                continue
            for peer, need in (("textgrad", 10.0), ("trace-opt", 3.0)):
                pw = get(peer, w, "wall_s")
                if pw:
                    out.append({"target": f"{w.upper()} @{key}: {mode} >= {need:g}x faster than {peer}",
                                "value": f"{pw:.2f} s / {wall:.2f} s = {pw / wall:.1f}x",
                                "met": pw / wall >= need, "kind": "speed", "workload": w,
                                "mode": mode, "peer": peer, "need": need})
            limit = LIMIT_LEVELS[w][CONFIGS[mode]["family"]] * lat
            if limit:
                t = {"target": f"{w.upper()} @{key}: {mode} within 1.5x of the critical-path limit",
                     "value": f"{wall:.3f} s / {limit:.1f} s = {wall / limit:.2f}x",
                     "met": wall / limit <= 1.5, "kind": "critical", "workload": w, "mode": mode}
                if zero:
                    t["zero_wall"] = _get(r, zero, mode, w, "wall_s")
                out.append(t)
    for mode, per in (r.get("large") or {}).items():
        for b, v in sorted(per.items(), key=lambda kv: int(kv[0])):
            need = LARGE_TARGET.get(int(b))
            if need is None or v.get("x_limit") is None:
                continue
            out.append({"target": f"W1 batch {b} @{key}: {mode} within {need:g}x of the "
                                  "critical-path limit",
                        "value": f"{v['wall_s']:.3f} s / {v['limit_s']:.1f} s = {v['x_limit']:.2f}x"
                                 + (f" ({v['x_algorithm_limit']:.2f}x counting the feedback-"
                                    "summary level)" if v["summary_calls"] else ""),
                        "met": v["x_limit"] <= need, "kind": "large", "mode": mode,
                        "batch": b})
    ps = r.get("prompt_size", {})
    for mode in TRACEGRAD:
        if mode not in ps:
            continue
        batches = sorted(ps[mode], key=int)
        toks = [ps[mode][b]["optimizer_max_prompt_tokens"] for b in batches]
        chars, what = PROMPT_BUDGET[CONFIGS[mode]["variant"]]
        budget = chars // 4
        growth = max(toks) - toks[0]
        out.append({"target": f"{mode}: optimizer request does not grow with the batch beyond its budget",
                    "value": f"batch {' / '.join(batches)}: {' / '.join(fmt(t) for t in toks)} prompt tokens; "
                             f"growth {fmt(growth)} <= {what} = {budget:,} tokens",
                    "met": growth <= budget, "kind": "prompt", "mode": mode})
    sc = r.get("scale", {})
    for shape, v in (sc.get("backward") or {}).items():
        out.append({"target": f"trace-mode backward, {v['nodes']:,} nodes ({shape}, {v['params']} parameter(s)) < 0.5 s",
                    "value": f"{v['backward_s'] * 1000:.0f} ms", "met": v["backward_s"] < 0.5,
                    "kind": "scale"})
    for mode, v in (sc.get("memory") or {}).items():
        growth = v["traced_growth_bytes"]
        out.append({"target": f"memory flat over {v['steps']:,} forward+backward+step iterations ({mode} mode)",
                    "value": f"Python heap {growth / 1024:+.1f} KiB, RSS {v['rss_growth_bytes'] / 1024:+.0f} KiB "
                             f"between step {v['samples'][0]['step']} and {v['samples'][-1]['step']}",
                    "met": growth < 256 * 1024, "kind": "memory"})
    return out


def why(t: dict[str, Any], r: dict[str, Any]) -> str:
    lat, key = main_latency(r)
    w = t.get("workload")

    def get(name: str, field: str) -> Any:
        return _get(r, key, name, w, field)

    if t["kind"] == "calls":
        k, tk = get(t["mode"], "kinds"), get("textgrad", "kinds")
        return (f"Per step: {fmt(k.get('forward'))} forward calls (the same in every framework), "
                f"{fmt(k.get('tracegrad.backward', 0))} feedback calls, {fmt(k.get('tracegrad.tgd', 0))} "
                f"optimizer calls and {fmt(k.get('tracegrad.summary', 0))} feedback-summary calls; TextGrad "
                f"made {fmt(tk.get('textgrad.gradient'))} feedback calls and {fmt(tk.get('textgrad.optimizer'))} "
                "optimizer calls. Per-example mode asks one feedback call per LLM call node (TextGrad one "
                "per node and trainable input, plus one per metric); with the forward calls, which nobody "
                "can avoid, that lands above half of TextGrad's total. Batched feedback is the mode that "
                "meets this target.")
    if t["kind"] == "speed":
        mine, peer = get(t["mode"], "depth"), get(t["peer"], "depth")
        bound = peer / mine if mine and peer else None
        wall, pwall = get(t["mode"], "wall_s"), get(t["peer"], "wall_s")
        text = (f"{t['peer']} waited for {fmt(peer)} latency periods per step, {t['mode']} for "
                f"{fmt(mine)} (the workload's critical-path limit for textual feedback is "
                f"{LIMIT_LEVELS[w]['textual']}). With a "
                f"fixed latency per call the speed-up cannot exceed the ratio of those depths, "
                f"{bound:.1f}x, even with zero client-side time. ")
        if bound is not None and bound < t["need"]:
            text += ("The target asks for more than the two algorithms' dependency chains allow: "
                     + ("TextGrad's backward is one sequential call per LLM node and input (and "
                        "per metric); tracegrad's textual backward is one concurrent level per LLM "
                        "call in the chain, so the chain of 3 calls costs 3 forward + 3 feedback + "
                        "1 update levels. Only the trace mode (no feedback calls) is faster by "
                        "more, see the speed-up table." if t["peer"] == "textgrad" else
                        "Trace needs only forward + one update; its cost is its sequential forward "
                        "pass. tracegrad's trace mode is the like-for-like comparison."))
        else:
            over = wall - (mine or 0) * lat
            text += (f"tracegrad's step took {over * 1000:.0f} ms beyond its {fmt(mine)} latency periods "
                     f"(client-side time: building and sending the batch's calls through the openai "
                     f"SDK under one GIL, parsing replies), which leaves it at "
                     f"{pwall / wall:.1f}x, {(1 - pwall / wall / t['need']) * 100:.0f}% short of the target.")
        return text
    if t["kind"] == "critical":
        depth, wall = get(t["mode"], "depth"), get(t["mode"], "wall_s")
        over = wall - (depth or 0) * lat
        zero = t.get("zero_wall")
        return (f"The step waited for {fmt(depth)} latency periods (limit "
                f"{LIMIT_LEVELS[w][CONFIGS[t['mode']]['family']]}); the remaining {over * 1000:.0f} ms is "
                "time between and around the calls on the client: launching the batch's calls, "
                "building prompts, parsing replies"
                + (f" (the same step takes {zero * 1000:.0f} ms at 0 ms latency)." if zero else "."))
    if t["kind"] == "large":
        v = r["large"][t["mode"]][t["batch"]]
        text = (f"The step waited for {fmt(v['depth'])} latency periods (limit "
                f"{v['limit_s'] / lat:.0f}). ")
        if v["summary_calls"]:
            text += ("One of them is the feedback-summary call: the batch's feedback exceeds the "
                     "optimizer's budget and is summarised before the update (bounded context), "
                     "a dependent call the limit does not count. ")
        return text + ("The rest is the time one level of that many calls takes on this "
                       "machine: the server's own work and the client's, on the same cores "
                       "(`benchmarks/http_floor.py` measures a level against a bare asyncio "
                       "client, the floor of any Python client on one loop); see the "
                       "large-batch table.")
    if t["kind"] == "prompt":
        return "The largest optimizer request grew by more than its feedback budget between the smallest and largest batch."
    if t["kind"] == "scale":
        return "See the scale table."
    if t["kind"] == "memory":
        return "The Python heap grew by more than 256 KiB between the first and the last sample."
    return ""


# -- rendering -----------------------------------------------------------------------------------


WORKLOAD_TITLES = {
    "w1": "W1 prompt step, batch 16",
    "w2": "W2 3-call chain, batch 8",
    "w3": "W3 instance, 1 iteration",
}


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines: list[str] = []
    add = lines.append
    lat, key = main_latency(r)
    add("# Benchmarks: tracegrad vs TextGrad vs Trace (trace-opt)\n")
    if r["config"]["quick"]:
        add("**QUICK RUN (`--quick`): a smoke test at small sizes, not a measurement.**\n")
    add(f"- Date: {r['date']}; the whole run took {r['elapsed_s'] / 60:.1f} min.")
    add(f"- Command: `bash benchmarks/setup_peers.sh && {r['command']}`")
    add(f"- Machine: {m['nproc']} CPUs ({m['cpu'] or 'unknown CPU'}), {m['platform']}, Python {m['python']}.")
    peers = m.get("peers") or {}
    add(f"- tracegrad {m['tracegrad']} at {m['tracegrad_commit'] or 'unknown commit'} (openai {m['openai_tracegrad_venv']}); "
        + (f"textgrad {peers.get('textgrad')} and trace-opt {peers.get('trace-opt')} with litellm "
           f"{peers.get('litellm')} and openai {peers.get('openai')} in `benchmarks/.peers-venv` (Python {peers.get('python')})."
           if peers else "peers not run."))
    add(f"- Each framework runs in its own process, {r['config']['repeats']} times per latency "
        "(the secondary rows *textgrad seq-forward* and *tracegrad textual, default "
        "max_concurrency 8* once). W1 and W2: 2 steps per run; the tables show the median of "
        "the second steps (the first step of a process also opens its HTTP connections; its "
        "median is in the *first step* column). W3: median over all iterations of all runs.")
    if r["invalid"]:
        add("\n**Invalid runs (a framework did not apply the expected update, or the server saw "
            "requests it could not classify or repair requests):**\n")
        for i in r["invalid"]:
            add(f"- {i}")
    else:
        add("- Every step of every run applied the expected new values; the server recognised "
            "every request and saw no repair requests.")
    add("")

    add("## Targets (issue 7)\n")
    add("| target | measured | met |")
    add("|---|---|---|")
    for t in r["targets"]:
        add(f"| {t['target']} | {t['value']} | {'yes' if t['met'] else '**no**'} |")
    add("")
    missed = [t for t in r["targets"] if not t["met"]]
    if missed:
        add("### Where a target is missed: by how much, and why\n")
        for t in missed:
            add(f"- **{t['target']}**: {t['value']}. {why(t, r)}")
        add("")

    summ = r["summary"].get(key) or {}
    if summ:
        add(f"## Speed-ups at {key} (wall time per step, medians)\n")
        add("| tracegrad mode | workload | vs textgrad | vs textgrad seq-forward | vs trace-opt | x critical-path limit |")
        add("|---|---|--:|--:|--:|--:|")
        for w in ("w1", "w2", "w3"):
            for mode in [n for n in summ if CONFIGS[n]["runner"] == "tracegrad"]:
                a = (summ.get(mode) or {}).get(w)
                if not a:
                    continue
                cells = []
                for peer in ("textgrad", "textgrad seq-forward", "trace-opt"):
                    pa = (summ.get(peer) or {}).get(w)
                    cells.append(f"{pa['wall_s'] / a['wall_s']:.1f}x" if pa else "–")
                limit = LIMIT_LEVELS[w][CONFIGS[mode]["family"]] * lat
                cells.append(f"{a['wall_s'] / limit:.2f}x" if limit else "–")
                add(f"| {mode} | {WORKLOAD_TITLES[w]} | " + " | ".join(cells) + " |")
        add("")

    add("## Results per step\n")
    add("Calls and tokens are counted by the server (its own request log); wall time is the "
        "runner's clock around one step (forward of the whole minibatch, backward, optimizer "
        "step). *depth* is the longest chain of requests in the step in which each request "
        "arrived after the previous one had been answered: the number of latency periods the "
        "step actually waited for. *limit* is the critical-path limit of the workload for the "
        "framework's algorithm family (see Method).\n")
    for k, per_cfg in r["summary"].items():
        lat_s = int(k[:-2]) / 1000
        add(f"### Latency {k} per request\n")
        add("| framework | workload | LLM calls | prompt tok | completion tok | wall s [min-max] | first step s | depth | limit s | x limit |")
        add("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
        for w in ("w1", "w2", "w3"):
            for name, per in per_cfg.items():
                a = per.get(w)
                if not a:
                    continue
                limit = LIMIT_LEVELS[w][CONFIGS[name]["family"]] * lat_s
                first = fmt(a.get("first_step_wall_s"), 3) if w != "w3" else "–"
                depth = fmt(a["depth"]) if lat_s else "–"
                lim = f"{limit:.1f} | {a['wall_s'] / limit:.2f}" if limit else "– | –"
                add(f"| {name} | {WORKLOAD_TITLES[w]} | {fmt(a['calls'])} | {fmt(a['prompt_tokens'], 0)} | "
                    f"{fmt(a['completion_tokens'], 0)} | {spread(a)} | {first} | {depth} | {lim} |")
        add("")
        w3 = {n: per.get("w3") for n, per in per_cfg.items() if per.get("w3")}
        if w3:
            add("W3, all 5 iterations (median over runs): " + "; ".join(
                f"{n} {a['total_calls']:.0f} calls in {a['total_wall_s']:.2f} s" for n, a in w3.items()) + ".\n")
    add("Calls per step by kind (medians at the main latency):\n")
    add("| framework | workload | calls by kind |")
    add("|---|---|---|")
    for w in ("w1", "w2", "w3"):
        for name, per in summ.items():
            a = per.get(w)
            if a:
                kinds = ", ".join(f"{kk} {fmt(v)}" for kk, v in sorted(a["kinds"].items()) if v)
                add(f"| {name} | {w.upper()} | {kinds} |")
    add("")

    ps = r.get("prompt_size") or {}
    if ps:
        batches = sorted({b for per in ps.values() for b in per}, key=int)
        add("## Optimizer prompt size against batch size (W1, one step, 0 ms)\n")
        add("Prompt tokens of the largest optimizer request of the step (server count), then of "
            "tracegrad's feedback-summary request (made when a batch's feedback exceeds the "
            "optimizer's `feedback_budget` of 6,000 characters, ~1,500 tokens), then of the largest "
            "feedback (\"gradient\") request; in brackets the step's LLM calls. tracegrad also "
            "runs a 4x larger batch to show where the bound levels off.\n")
        add("| framework | " + " | ".join(f"batch {b}" for b in batches) + " |")
        add("|---|" + "---|" * len(batches))
        for name, per in ps.items():
            cells = []
            for b in batches:
                v = per.get(b)
                if not v:
                    cells.append("–")
                    continue
                cells.append(f"{fmt(v.get('optimizer_max_prompt_tokens'))} / {fmt(v.get('summary_max_prompt_tokens'))} / "
                             f"{fmt(v.get('feedback_max_prompt_tokens'))} ({fmt(v.get('calls'))})")
            add(f"| {name} | " + " | ".join(cells) + " |")
        add("")

    large = r.get("large") or {}
    if large:
        add(f"## Large minibatches (W1 at {key}, tracegrad, ceiling = batch)\n")
        add("Medians of the steady steps; *limit* is the critical-path limit (forward + feedback "
            "+ update levels), *alg. limit* adds the feedback-summary level when the step made "
            "one; RSS is the runner's peak.\n")
        add("| mode | batch | LLM calls | summary calls | wall s [min-max] | depth | limit s | x limit | "
            "alg. limit s | x alg. limit | peak RSS MiB |")
        add("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        for mode, per in large.items():
            for b, v in sorted(per.items(), key=lambda kv: int(kv[0])):
                if v.get("wall_s") is None:
                    continue
                add(f"| {mode} | {b} | {fmt(v['calls'])} | {fmt(v['summary_calls'])} | "
                    f"{spread(v)} | {fmt(v['depth'])} | {v['limit_s']:.2f} | "
                    f"{fmt(v['x_limit'])} | {v['algorithm_limit_s']:.2f} | "
                    f"{fmt(v['x_algorithm_limit'])} | {fmt(v.get('max_rss_mib'), 0)} |")
        add("")
    chain = r.get("chain") or {}
    if chain:
        add("## Long chain (`benchmarks/chain.py`: backward through `@tg.op` functions, no LLM)\n")
        add("| propagator | nodes | backward (median) | peak traced memory | feedback at the parameter |")
        add("|---|--:|--:|--:|--:|")
        for mode, v in chain.items():
            add(f"| {mode} | {v['nodes']:,} | {v['backward_s']:.2f} s | {v['peak_mb']:.0f} MB | "
                f"{v['feedback_chars']:,} chars |")
        add("")

    sc = r.get("scale") or {}
    if sc:
        add("## Scale\n")
        add("| trace-mode backward | nodes | parameters | median of 5 |")
        add("|---|--:|--:|--:|")
        for shape, v in sc["backward"].items():
            add(f"| {shape} | {v['nodes']:,} | {v['params']} | {v['backward_s'] * 1000:.1f} ms |")
        add("")
        add("| memory: W1 pipeline, batch 4, mock engine | iterations | time per iteration | Python heap (tracemalloc) every 10% of the run, KiB | RSS growth |")
        add("|---|--:|--:|---|--:|")
        for mode, v in sc["memory"].items():
            heap = " ".join(f"{s['traced_bytes'] / 1024:.0f}" for s in v["samples"])
            add(f"| {mode} | {v['steps']:,} | {v['elapsed_s'] / v['steps'] * 1000:.1f} ms | {heap} | "
                f"{v['rss_growth_bytes'] / 1024:+.0f} KiB |")
        add("")

    add(METHOD)
    return "\n".join(lines) + "\n"


METHOD = """## Method

**Server.** `benchmarks/server.py`: tracegrad's `FakeOpenAIServer` (real HTTP on 127.0.0.1)
with a fixed sleep per request, started once by `run_all.py` and shared by all frameworks.
Replies come from `benchmarks/replies.py`, which recognises each request by content and
answers in the format its framework parses: forward calls by the stage marker in the system
prompt (`[qa]`, `[extract]`, `[solve]`, `[format]`), the judge by `[judge]`, TextGrad's
gradient and TGD requests by their system prompts (`<IMPROVED_VARIABLE>` reply), Trace's
OptoPrime by its output-format prompt (JSON with `reasoning`/`answer`/`suggestion`),
tracegrad's feedback request by its prompt file (JSON with one entry per key listed under
"Inputs to give feedback on"), its TGD request (`<new_value>` reply), its trace optimizer
(JSON `reasoning`/`values`) and its feedback summary. Feedback texts name the concrete
failures of the runs they were asked about, so feedback from different examples differs as a
real model's would. Every run checks that each framework applied the same improved values
(a step that silently did nothing would be flagged as invalid above), and that the server
recognised every request and saw no repair requests. Tokens: the server's count, about 4
characters per token plus 4 per message, the same rule for everyone; the log is checked
against the usage the server returned.

**Workloads** (`benchmarks/common.py`; same data, same forward calls in every framework):

1. *Prompt optimization step*: one trainable system prompt, 16 addition questions, one LLM
   call per example, an exact-match metric whose explanation ("Wrong: expected 42, got 43.")
   is the feedback -- no judge call. One step = forward of the batch, backward, one optimizer
   step. The simulated model gets 9 of the 16 sums wrong (6 of the 8 in W2), the same ones
   in every framework.
2. *Chain of 3 LLM calls* (extract numbers -> add -> format), each with its own trainable
   system prompt, 8 questions, same metric; 24 forward calls per step.
3. *Instance optimization*: one answer (a worked solution with an arithmetic error) improved
   for 5 iterations; each iteration = one judge call on the answer, backward, one update.

**How each framework runs** (each in its own process, pointed at the server by base URL):

- *tracegrad* (`run_tracegrad.py`): `LLM("openai:bench-model", base_url=..., cache=False,
  max_concurrency=32)` -- the default ceiling (it was 8; the row *tracegrad textual, default
  max_concurrency 8* shows that former default) --; forward of a
  minibatch in a thread pool; `MetricLoss`, `tg.sum`,
  `loss.backward(propagator=...)`, `TGD` or `TraceOptimizer`. Modes: *textual*
  (`TextualPropagator(batch_feedback=False)`), *batched* (`batch_feedback=True`), *trace*
  (`TracePropagator` + `TraceOptimizer`). W3 uses `TextLoss` as the judge.
- *TextGrad 0.1.8* (`peers/run_textgrad.py`): `ChatExternalClient` on an `openai.OpenAI`
  client with the server's base URL, as forward and backward engine; its diskcache pointed at
  an empty directory and its lookup turned off. `BlackboxLLM` per call, the metric as a
  `StringBasedFunction` (TextGrad's metric-based loss), `tg.sum(losses).backward()`,
  `TextualGradientDescent`; W3 uses `TextLoss`. TextGrad has no concurrency of its own
  (backward and step are sequential loops); row *textgrad* runs the forward pass of a
  minibatch in a thread pool as its evaluation code does (the most favourable setting), row
  *textgrad seq-forward* in a plain loop as its training script does.
- *Trace 0.1.3.8* (`peers/run_trace.py`): default LiteLLM backend with
  `TRACE_LITELLM_MODEL=openai/bench-model` and the base URL in the environment; the forward
  call is a `@bundle`; a minibatch's outputs and feedback combined with `batchify` (Trace's
  minibatch helper); `OptoPrime` (one call per step); W3 as in Trace's reproduction of
  TextGrad's solution optimization. The forward pass runs examples one after another, Trace
  0.1.3.8's only working mode: concurrent `bundle` calls (threads, or `async def` bundles with
  `asyncio.gather`) raise `TraceMissingInputsError` because `bundle` records the nodes a call
  reads on a process-global stack.

**Critical path.** The longest chain of dependent LLM calls a step needs, times the latency:
for the textual-gradient family (TextGrad, tracegrad textual and batched) forward depth + one
feedback call per LLM call on the longest parameter-to-loss path + one update: W1 1+1+1 = 3,
W2 3+3+1 = 7; for the trace family (Trace, tracegrad trace) forward depth + one update: W1 2,
W2 4. W3 per iteration: judge -> update = 2 for both (the judge's verdict is already
feedback on the answer). At 200 ms: W1 0.6 s / 0.4 s, W2 1.4 s / 0.8 s, W3 0.4 s per
iteration. The measured *depth* shows how many latency periods each step really waited for.

**0 ms latency** shows framework overhead: the time a step takes when the model answers
instantly (HTTP on loopback, prompt building, parsing, graph work).

**Scale** (`benchmarks/scale.py`): trace-mode backward timed on graphs of 10,000 nodes built
from tracegrad's string ops; memory sampled with tracemalloc and RSS over 1,000 iterations of
the W1 pipeline (batch 4, forward + backward + optimizer step) on the mock engine.

**Large minibatches** (issue 15): W1 at batch 16, 64 and 256 at the main latency for the three
tracegrad modes, 2 steps per run (the second is the measurement), with the concurrency
ceiling raised to the batch (`--max-concurrency max(32, batch)`) so that one level of the
step can be in flight at once, as the critical-path limit assumes. The table gives calls,
wall time, the measured depth, the runner's peak RSS and the ratio to the critical-path limit
(W1: 3 levels textual, 2 trace); from the size where the batch's feedback is over the
optimizer's budget, a step also makes one feedback-summary call, a dependent level of its
own, so a second ratio counts it (*alg. limit*). `run_all.py` prints every ratio to the
critical-path limit on stdout at the end. Targets: within 1.3x at batch 16 and 64, 1.5x at
256.

**Long chain** (`benchmarks/chain.py`): backward through a chain of 10,000 `@tg.op` functions
(no LLM call), with the textual, batched and trace propagators: median time of 3 runs, peak
traced memory (tracemalloc) and the size of the feedback reaching the parameter.
"""


if __name__ == "__main__":
    main()
