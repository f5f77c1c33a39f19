#!/usr/bin/env python
"""kill -9 ``tracegrad optimize`` at random moments, resume each run, check nothing is lost.

A FakeOpenAIServer on 127.0.0.1 (with a little latency, so runs last a few seconds) plays
the demo's scripted counting world. One uninterrupted run is the reference. Then each
trial starts the same command as a child process, SIGKILLs it after a random delay
(anywhere from interpreter start-up to the final write-back), and checks what it left:
every JSON file parses, history steps are 1..n (a torn last line is allowed: the resume
cuts it), the prompt file is byte-identical or validly replaced with NAME.bak holding the
original, the cache passes ``PRAGMA integrity_check``. Then it runs the same command with
``--resume RUN_DIR`` and checks the finished run: exit 0, steps 1..N each exactly once,
state.json consistent, cache intact -- and the best prompt equal to the reference run's.

    python scripts/kill9_trials.py              # 20 trials
    python scripts/kill9_trials.py -n 50 --seed 7

Exit status 0 when every trial resumed to completion with nothing damaged.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.reliability.reliability_harness import (  # noqa: E402
    KillTrial,
    best_value,
    check_run_dir,
    copy_counting,
    optimize_args,
    run_cli_subprocess,
    subprocess_env,
    world_server,
)
from tests.reliability.reliability_harness import kill9_trial as run_trial  # noqa: E402


def reference_run(tmp: Path, url: str, steps: int) -> tuple[float, object]:
    task = copy_counting(tmp / "task")
    run_dir = tmp / "run"
    r = run_cli_subprocess(optimize_args(task, url, run_dir, "--json", steps=steps),
                           subprocess_env(tmp), cwd=tmp)
    if r.code != 0 or check_run_dir(run_dir, finished=True, steps=steps):
        raise SystemExit(f"the uninterrupted reference run failed: {r!r}")
    return r.seconds, best_value(run_dir)


def run_trials(n: int, *, seed: int = 0, steps: int = 4, latency: float = 0.2,
               log=print) -> tuple[list[KillTrial], float]:
    rng = random.Random(seed)
    trials: list[KillTrial] = []
    with tempfile.TemporaryDirectory(prefix="tg-kill9-") as tmp_s, \
            world_server(latency=latency) as (server, _):
        tmp = Path(tmp_s)
        duration, reference = reference_run(tmp / "reference", server.url, steps)
        log(f"reference run: {duration:.1f}s; killing at random moments in "
            f"[0, {0.85 * duration:.1f}]s")
        for i in range(n):
            kill_after = rng.uniform(0.0, 0.85 * duration)  # the end is mostly write-back
            t = run_trial(i + 1, tmp / f"trial-{i + 1}", server.url, kill_after, steps=steps,
                          reference=reference)
            trials.append(t)
            ok = t.resumed and not t.damage_after_kill and not t.damage_after_resume
            log(f"trial {t.index:>3}: kill at {t.kill_after:5.2f}s "
                f"({'killed' if t.killed else 'had finished'}; {t.state_after_kill}) -> "
                f"{'resumed to the end' if t.resumed else 'RESUME FAILED'}"
                f"{'' if t.same_as_reference else ' (best differs from the reference)'}"
                f"{'' if ok else ' DAMAGE: ' + '; '.join(t.damage_after_kill + t.damage_after_resume)}"
                f"{'' if t.resumed else ' ' + t.message}")
    return trials, duration


def summary(trials: list[KillTrial]) -> dict[str, int]:
    return {
        "trials": len(trials),
        "killed_mid_run": sum(t.killed for t in trials),
        "resumed_to_completion": sum(t.resumed for t in trials),
        "damaged_after_kill": sum(bool(t.damage_after_kill) for t in trials),
        "damaged_after_resume": sum(bool(t.damage_after_resume) for t in trials),
        "same_best_as_uninterrupted": sum(bool(t.same_as_reference) for t in trials),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--latency", type=float, default=0.2, help="server latency, seconds")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    trials, _ = run_trials(args.trials, seed=args.seed, steps=args.steps, latency=args.latency)
    s = summary(trials)
    print()
    print(f"kill -9 trials: {s['trials']}  killed mid-run: {s['killed_mid_run']}  resumed to "
          f"completion: {s['resumed_to_completion']}  damaged after kill: "
          f"{s['damaged_after_kill']}  damaged after resume: {s['damaged_after_resume']}  "
          f"same best prompt as the uninterrupted run: {s['same_best_as_uninterrupted']}"
          f"  ({time.perf_counter() - t0:.0f}s)")
    ok = s["resumed_to_completion"] == s["trials"] and not s["damaged_after_kill"] \
        and not s["damaged_after_resume"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
