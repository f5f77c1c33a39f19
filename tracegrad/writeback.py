"""Putting the best template of a run back into the user's prompt file.

The file changes only when the best candidate beat the baseline: a run that learned
nothing leaves it byte for byte as it was. The previous version is kept as
``NAME.prompt.bak``, every write is atomic (front matter kept as written), and the run
directory always gets ``best.prompt`` so a result can be inspected before it is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fileio import atomic_write
from .promptfile import PromptFile, backup_path

__all__ = ["NothingLearned", "WriteBack", "best_body", "best_demos", "best_values",
           "write_back"]


class NothingLearned(RuntimeError):
    """The run stopped before it could measure even the baseline; nothing is written."""


@dataclass(frozen=True)
class WriteBack:
    body: str  # the best template found
    improved: bool  # it beat the baseline, and differs from the file's template
    written: Path | None  # the prompt file written, if any
    backup: Path | None  # the previous version, if one was kept
    best_prompt: Path  # RUN_DIR/best.prompt, written in every case


def best_values(pf: PromptFile, result: Any) -> dict[str, str]:
    """The best trainable text(s) of the run, by the names :meth:`PromptFile.write` takes
    (``prompt`` for a one-template file, the message names of a chat-shaped one)."""
    state = result.best_state or {}
    values = pf.trainable_values()
    if len(values) == 1 and not any(k in state for k in values):
        only = next((v for v in state.values() if isinstance(v, str)), None)  # older runs
        return {k: only for k in values} if only is not None else values
    return {k: str(state.get(k, v)) for k, v in values.items()}


def best_demos(pf: PromptFile, result: Any) -> list[dict[str, str]] | None:
    """The run's best few-shot demos, for a prompt file whose front matter asks for them."""
    state = result.best_state or {}
    demos = state.get("demos") if pf.demos_max else None
    return list(demos) if isinstance(demos, list) else None


def best_body(pf: PromptFile, result: Any) -> str:
    """The body (all text after the front matter) with the run's best values."""
    return pf.body_with(best_values(pf, result))


def write_back(pf: PromptFile, prompt_file: Path, out: Path | None, result: Any) -> WriteBack:
    """Write the run's best template to ``out`` (or back to ``prompt_file``) if it is better.

    With ``out`` naming another file, that file is always written (the original template
    when nothing improved), so a script can rely on it existing afterwards.
    """
    run_dir = Path(result.run_dir)
    values, demos = best_values(pf, result), best_demos(pf, result)
    body = pf.body_with(values)
    changed = body != pf.body or (demos is not None and demos != pf.demos)
    improved = (
        result.best_score is not None and result.baseline_score is not None
        and result.best_score > result.baseline_score and changed
    )
    if result.stopped_reason == "budget" and result.baseline_score is None and not improved:
        raise NothingLearned(
            "the budget ran out before the baseline score could be measured, so nothing was "
            f"learned and no file was changed (run dir {run_dir})")
    written: Path | None = None
    backup: Path | None = None
    if out is not None and out.resolve() != prompt_file.resolve():
        had = out.exists()
        written = pf.write(out, *((values, demos) if improved else (pf.trainable_values(),)))
        backup = backup_path(out) if had and backup_path(out).exists() else None
    elif improved:
        written = pf.write(None, values, demos)
        backup = backup_path(prompt_file)
    best = run_dir / f"best{pf.path.suffix or '.prompt'}"  # best.prompt, best.prompty
    atomic_write(best, pf.render_text(values, demos))
    return WriteBack(body, bool(improved), written, backup, best)
