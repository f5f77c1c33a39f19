"""The prompts tracegrad itself sends, as text files users can read and override.

``load("textual_backward")`` reads ``textual_backward.txt`` from this package unless an
override is set with :func:`override` (a path) or the environment variable
``TRACEGRAD_PROMPT_<NAME>`` (a path).

Text stated once for several prompts is written as a placeholder that ``load`` fills in,
in built-in prompts and overrides alike: ``$kind_rules`` (how a value keeps its kind,
from :mod:`tracegrad.prompts.kinds`). Other ``$names`` are left for the caller.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from .kinds import kind_rules

_overrides: dict[str, Path] = {}
# placeholders every prompt may use; each is filled with the text its function returns
FRAGMENTS: dict[str, Callable[[], str]] = {"kind_rules": kind_rules}
_PLACEHOLDER = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


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
    text = Path(path).read_text(encoding="utf-8") if path else _builtin(name)
    return fill(text)


def fill(text: str) -> str:
    """Replace the placeholders of :data:`FRAGMENTS`; leave every other ``$`` as it is."""

    def sub(m: re.Match[str]) -> str:
        key = m.group(1) or m.group(2)
        return FRAGMENTS[key]() if key in FRAGMENTS else m.group(0)

    return _PLACEHOLDER.sub(sub, text)


@functools.cache
def _builtin(name: str) -> str:
    # package data never changes while we run: read each file once, not once per LLM call
    try:
        return resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyError(f"no built-in prompt named {name!r}; known: {', '.join(names())}") from None
