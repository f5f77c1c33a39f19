"""``tracegrad report``, ``demo``, ``cache`` and ``--version``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._shared import (
    CLIError,
    JsonOpt,
    OptimizerOpt,
    _check_optimizer,
    _diff,
    _errors,
    _log,
    _out,
    _out_json,
    _plural,
    app,
    cache_app,
)


@app.command(no_args_is_help=True)
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by optimize.",
                                            show_default=False)],
) -> None:
    """Write (or rewrite) report.html for a run directory and print its path.

    Example:

        tracegrad report tracegrad-runs/object_counting-20250101-120000
    """
    from ..train.report import write_report

    with _errors():
        if not run_dir.is_dir():
            raise CLIError(f"{run_dir}: no such directory")
        if not (run_dir / "config.json").is_file():
            raise CLIError(f"{run_dir}: not a run directory (no config.json)")
        path = write_report(run_dir)
        _out(str(path))


# -- demo ------------------------------------------------------------------------------------------


@app.command()
def demo(
    steps: Annotated[int, typer.Option("--steps", "-n", min=1, help="Optimization steps.")] = 4,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Keep the run here "
                                                 "(default: a temporary directory).")] = None,
    optimizer: OptimizerOpt = "tgd",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    json_output: JsonOpt = False,
) -> None:
    """Run the whole optimization loop offline on a SIMULATED model. No key, no network.

    A scripted model world (tracegrad/demo.py) answers counting questions; it answers
    better when its prompt contains the right instructions. The library's real loop
    runs on it: forward passes, metric feedback, backward feedback, the optimizer's
    rewrite, validation. Nothing about a real model's quality can be learned from it.

    Example:

        tracegrad demo --steps 4
    """
    from .. import demo as demo_mod

    with _errors():
        opt = _check_optimizer(optimizer)
        if run_dir is not None and ((run_dir / "history.jsonl").exists()
                                    or (run_dir / "state.json").exists()):
            raise CLIError(f"--run-dir {run_dir} already holds a run; choose another directory")
        _log("[bold magenta]SIMULATED[/bold magenta]: this demo runs on a scripted mock model, "
             "not a real LLM")
        res = demo_mod.run_demo(run_dir=run_dir, steps=steps, optimizer=opt, seed=seed,
                                log=_log)
        if json_output:
            _out_json({"simulated": True, **res})
            return
        _out("SIMULATED demo (scripted mock model, no real LLM was called)")
        _out("")
        _out("prompt before:")
        _out(_indent(res["before"]))
        _out("prompt after:")
        _out(_indent(res["after"]))
        _out("diff:")
        _out(_indent(_diff(res["before"], res["after"], "before", "after")))
        _out("")
        scores = " -> ".join(f"{s:.2f}" for s in res["val_scores"])
        _out(f"validation score by step: {scores}")
        why = {"perfect": "the validation score reached 1.0, so there was nothing left to "
               "learn", "patience": "no step improved for a while"}.get(res.get("stopped_reason"))
        if why and res.get("steps_done", steps) < steps:
            _out(f"stopped after {_plural(res['steps_done'], 'step')} of {steps}: {why}")
        _out(f"score: {res['baseline_score']:.3f} -> {res['best_score']:.3f} (SIMULATED)")
        _out(f"calls: {res['calls']} simulated (forward {res['calls_by_purpose'].get('forward', 0)}"
             f", backward {res['calls_by_purpose'].get('backward', 0)}, optimizer "
             f"{res['calls_by_purpose'].get('optimizer', 0)})")
        _out(f"prompt file: {res['prompt_file']} (the original is kept as "
             f"{res['prompt_file']}.bak)")
        _out(f"run dir: {res['run_dir']}")
        if res.get("report"):
            _out(f"report: {res['report']}")


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip("\n").splitlines())


# -- cache -------------------------------------------------------------------------------------

CachePathOpt = Annotated[
    Path | None,
    typer.Option("--path", help="The cache file (default: $TRACEGRAD_CACHE_DIR/cache.sqlite3 "
                 "or ~/.cache/tracegrad/cache.sqlite3)."),
]


class _NoEngine:
    model = "none"

    def complete(self, request: Any) -> Any:  # pragma: no cover - never called
        raise RuntimeError("the cache command makes no calls")

    async def acomplete(self, request: Any) -> Any:  # pragma: no cover
        raise RuntimeError("the cache command makes no calls")


def _cache(path: Path | None) -> Any:
    from ..llm.cache import Cache, default_cache_path

    p = path or default_cache_path()
    return Cache(_NoEngine(), p, enabled=True), p


@cache_app.command("info")
def cache_info(path: CachePathOpt = None, json_output: JsonOpt = False) -> None:
    """Show where the cache is, how many replies it holds and its size.

    Example:

        tracegrad cache info
    """
    with _errors():
        cache, p = _cache(path)
        if not Path(p).exists():
            info = {"path": str(p), "entries": 0, "size_bytes": 0, "exists": False,
                    "max_reply_bytes": cache.max_reply_bytes, "skipped_large": 0,
                    "skipped_secret": 0}
        else:
            info = {**cache.info(), "exists": True}
            cache.close()
        for k in ("hits", "misses", "enabled"):
            info.pop(k, None)
        if json_output:
            _out_json(info)
            return
        _out(f"cache: {info['path']}{'' if info['exists'] else ' (not created yet)'}")
        _out(f"entries: {info['entries']}  size: {info['size_bytes'] / 1024:.1f} KiB")
        _out(f"largest reply kept: {info['max_reply_bytes'] / 1024:.0f} KiB "
             f"($TRACEGRAD_CACHE_MAX_REPLY_BYTES); larger replies used but not stored: "
             f"{info['skipped_large']}")
        if info["skipped_secret"]:
            _out(f"replies used but not stored because they held a secret (a server that "
                 f"echoes the API key?): {info['skipped_secret']}")


@cache_app.command("clear")
def cache_clear(path: CachePathOpt = None, json_output: JsonOpt = False) -> None:
    """Delete every cached reply (the next runs call the model again).

    Example:

        tracegrad cache clear
    """
    with _errors():
        cache, p = _cache(path)
        n = 0
        if Path(p).exists():
            n = cache.clear()
            cache.close()
        if json_output:
            _out_json({"path": str(p), "removed": n})
            return
        _out(f"removed {n} cached replies from {p}")


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        _out(f"tracegrad {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", metavar=" ", help="Print the version and exit.",
                                          is_eager=True, callback=_version)] = False,
) -> None:
    """Optimize LLM prompts and pipelines with textual gradients."""
