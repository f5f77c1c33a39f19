"""The prompts tracegrad itself sends, as text files users can read and override.

``load("textual_backward")`` reads ``textual_backward.txt`` from this package unless an
override is set with :func:`override` (a path) or the environment variable
``TRACEGRAD_PROMPT_<NAME>`` (a path).
"""

from __future__ import annotations

import functools
import os
from importlib import resources
from pathlib import Path

_overrides: dict[str, Path] = {}


def override(name: str, path: str | Path | None) -> None:
    if path is None:
        _overrides.pop(name, None)
        return
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"prompt override for {name!r}: no such file {p}")
    _overrides[name] = p


def names() -> list[str]:
    return sorted(
        f.name[:-4] for f in resources.files(__package__).iterdir() if f.name.endswith(".txt")
    )


def load(name: str) -> str:
    path = _overrides.get(name) or os.environ.get(f"TRACEGRAD_PROMPT_{name.upper()}")
    if path:
        return Path(path).read_text(encoding="utf-8")
    return _builtin(name)


@functools.cache
def _builtin(name: str) -> str:
    # package data never changes while we run: read each file once, not once per LLM call
    try:
        return resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyError(f"no built-in prompt named {name!r}; known: {', '.join(names())}") from None
