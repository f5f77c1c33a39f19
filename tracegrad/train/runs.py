"""The run directory: a training run as plain files that survive ``kill -9``.

Layout (JSON and JSONL only -- a run directory is shared, diffed and attached to bug
reports, so it must be readable by anyone and never executable, hence no pickle)::

    config.json     what was run: optimizer, steps, seed, models, datasets (+ sha256), initial values
    history.jsonl   one line per finished step
    best.json       the best candidate so far
    state.json      everything needed to resume: optimizer state, pool, step counter
    calls.jsonl     optional call log (written by tracegrad.llm.CallLog)
    report.html     written by tracegrad.train.report

Every file except the history is replaced atomically (temp file in the same directory,
fsync, rename), so a reader or a resumed run sees either the old or the new version. The
history is appended and fsynced line by line; a torn last line (the process died mid
write) is ignored and cut off on resume.

Nothing written here may hold a credential: every record goes through
:func:`tracegrad.redaction.scrub` (engine keys, secret-looking environment variables,
``sk-...`` strings, bearer tokens and secret-named config keys become ``[REDACTED]``)
before anything touches the disk. ``REDACTED``, ``collect_secrets`` and ``scrub`` are
re-exported from there for older imports.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets as _secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fileio import atomic_write
from ..redaction import REDACTED, collect_secrets, scrub

__all__ = [
    "REDACTED",
    "RunData",
    "RunDir",
    "RunDirError",
    "RunPlan",
    "check_resumable",
    "holds_run",
    "never_started",
    "note_resume",
    "plan_run",
    "remove_stale_temps",
    "atomic_write_text",
    "collect_secrets",
    "default_run_dir",
    "load_run",
    "scrub",
    "state_hash",
]

CONFIG, HISTORY, BEST, STATE, CALLS, REPORT = (
    "config.json",
    "history.jsonl",
    "best.json",
    "state.json",
    "calls.jsonl",
    "report.html",
)


class RunDirError(ValueError):
    """A file of a run directory that cannot be read; the message names the file."""


# -- files --------------------------------------------------------------------------------


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` so that a crash at any moment leaves the old or the new content."""
    atomic_write(path, text)


def _dumps(value: Any, indent: int | None = None) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, indent=indent, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), ensure_ascii=False, indent=indent)
    except TypeError as e:
        raise TypeError(f"run files hold JSON only; cannot write {e}") from None


def _finite(v: Any) -> Any:
    if isinstance(v, float) and v != v or v in (float("inf"), float("-inf")):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


def state_hash(state: dict[str, Any]) -> str:
    """A stable fingerprint of parameter values: same values, same hash, across processes."""
    text = json.dumps(state, sort_keys=True, ensure_ascii=False, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def default_run_dir(base: str | os.PathLike[str] = "tracegrad-runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(base) / f"{stamp}-{_secrets.token_hex(3)}"


class RunDir:
    """Reads and writes the files of one run directory."""

    def __init__(self, path: str | os.PathLike[str], secrets: Iterable[str] = ()) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.secrets = list(secrets)

    def file(self, name: str) -> Path:
        return self.path / name

    # -- JSON files --------------------------------------------------------------
    def write_json(self, name: str, data: Any) -> Path:
        p = self.file(name)
        atomic_write_text(p, _dumps(scrub(data, self.secrets), indent=2) + "\n")
        return p

    def read_json(self, name: str, default: Any = None) -> Any:
        p = self.file(name)
        if not p.exists():
            return default
        try:
            with open(p, encoding="utf-8") as f:
                return json.load(f)
        except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, nested too deep
            raise RunDirError(f"{p}: not a readable JSON file ({e}); the run directory is "
                              "damaged or was not written by tracegrad") from None

    # -- history -----------------------------------------------------------------
    def append_history(self, record: dict[str, Any]) -> None:
        line = _dumps(scrub(record, self.secrets))
        with open(self.file(HISTORY), "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_history(self) -> list[dict[str, Any]]:
        """The complete lines of the history; stops at a torn or corrupt line."""
        return [rec for rec, _ in self._history_lines()]

    def _history_lines(self) -> list[tuple[dict[str, Any], str]]:
        p = self.file(HISTORY)
        if not p.exists():
            return []
        out: list[tuple[dict[str, Any], str]] = []
        with open(p, encoding="utf-8", newline="") as f:
            for line in f:
                if not line.endswith("\n"):
                    break
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    break
                if not isinstance(rec, dict):
                    break
                out.append((rec, line))
        return out

    def truncate_history(self, last_step: int) -> list[dict[str, Any]]:
        """Keep the complete lines up to ``last_step``; drop anything after (or torn)."""
        kept = [
            (r, line)
            for r, line in self._history_lines()
            if isinstance(r.get("step"), int) and r["step"] <= last_step
        ]
        atomic_write_text(self.file(HISTORY), "".join(line for _, line in kept))
        return [r for r, _ in kept]


@dataclass
class RunData:
    """A run directory read back, for reports and the CLI."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)


def load_run(path: str | os.PathLike[str]) -> RunData:
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"no run directory at {p}")
    rd = RunDir.__new__(RunDir)
    rd.path, rd.secrets = p, []
    return RunData(
        path=p,
        config=rd.read_json(CONFIG, {}) or {},
        history=rd.read_history(),
        best=rd.read_json(BEST, {}) or {},
        state=rd.read_json(STATE, {}) or {},
    )


# -- resume policy ----------------------------------------------------------------------
# One statement of where a run goes and when it may continue, for the library and the CLI.


@dataclass
class RunPlan:
    path: Path | None  # None: the run writes no files
    resume: bool
    note: str | None = None  # something the user should be told


def holds_run(path: Path) -> bool:
    return (path / STATE).exists() or (path / HISTORY).exists()


def never_started(path: Path) -> bool:
    """A directory whose run never began: empty, or only what precedes ``config.json``
    (the CLI's copy of the prompt, a call log). Nothing to resume, nothing to lose."""
    if not path.is_dir():
        return False
    names = {p.name for p in path.iterdir() if not p.name.endswith(".tmp")}
    return names <= {"original.prompt", CALLS}


def plan_run(
    run_dir: str | os.PathLike[str] | None | bool,
    resume: str | os.PathLike[str] | None,
    default: Path | None = None,
    flags: tuple[str, str] = ("resume", "run_dir"),
) -> RunPlan:
    """Where a run goes, checked before anything is written or any engine built.

    ``run_dir=False`` writes nothing. ``flags`` names the two options in messages (the
    CLI passes ``--resume``/``--run-dir``).
    """
    res, rdir = flags

    def say(flag: str, value: Any) -> str:
        return f"{flag} {value}" if flag.startswith("-") else f"{flag}={str(value)!r}"

    if resume is not None:
        rp = Path(resume)
        if never_started(rp):
            return RunPlan(rp, False, f"{rp} holds no run yet (it was stopped before the "
                           "first step began); starting the run there")
        if not (rp / CONFIG).is_file():
            raise FileNotFoundError(f"{say(res, rp)}: not a run directory (no {CONFIG})")
        if run_dir not in (None, False, True) and Path(run_dir).resolve() != rp.resolve():
            raise ValueError(f"{res} and {rdir} name different directories; give only "
                             f"{say(res, 'RUN_DIR')}")
        return RunPlan(rp, True)
    if run_dir is False:
        return RunPlan(None, False)
    path = Path(run_dir) if run_dir not in (None, True) else (default or default_run_dir())
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{say(rdir, path)}: this is a file, not a directory")
    if holds_run(path):
        raise FileExistsError(f"{path} already holds a run: continue it with "
                              f"{say(res, path)}, or choose another {rdir}")
    return RunPlan(path, False)


def check_resumable(config: dict[str, Any], names: Iterable[str],
                    datasets: dict[str, Any]) -> None:
    """A run may continue only with the parameters and the data it started with."""
    saved, have = set(config.get("parameters", {})), set(names)
    if saved and saved != have:
        raise ValueError(f"cannot resume: the run optimized parameters {sorted(saved)}, "
                         f"this program has {sorted(have)}")
    for split, ds in datasets.items():
        rec = (config.get("datasets") or {}).get(split)
        if rec and ds is not None and rec.get("sha256") and rec["sha256"] != ds.sha256:
            raise ValueError(f"cannot resume: the {split} data differs from the run's "
                             f"({rec.get('path') or 'in-memory'}, sha256 {rec['sha256'][:12]})")


def remove_stale_temps(path: Path) -> None:
    """A killed process's half-written files (see :func:`atomic_write_text`)."""
    for stale in path.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def note_resume(config: dict[str, Any], at_step: int, steps: int) -> dict[str, Any]:
    config.setdefault("resumes", []).append(
        {"at_step": at_step, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "steps": steps}
    )
    config["steps"] = steps
    return config
