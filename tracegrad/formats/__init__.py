"""Prompt files of other tools, read as tracegrad prompt files.

``.prompty`` files are Prompty (:mod:`.prompty`). A ``.prompt`` file is either
tracegrad's own or Dotprompt (:mod:`.dotprompt`), and both use YAML front matter and
the same extension, so they are told apart by content (:func:`kind_of`): Dotprompt's
``input: {schema: ...}``, ``output: {format: ...}``, ``config`` or a Handlebars body
without any tracegrad-only key. Chat-shaped bodies of every format are :mod:`.chat`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .handlebars import uses_handlebars

# keys only tracegrad's own files have; one of them makes a .prompt file tracegrad's
TRACEGRAD_ONLY = frozenset({"metric", "constraints", "params", "optimizer_model", "system",
                            "trainable"})
# keys only Dotprompt files have
DOTPROMPT_ONLY = frozenset({"config", "ext", "raw", "toolDefs", "tools", "variant", "version",
                            "name", "tracegrad"})


def kind_of(path: Path, text: str) -> str:
    """``prompty``, ``dotprompt`` or ``tracegrad``."""
    if path.suffix.lower() == ".prompty":
        return "prompty"
    data = _front_matter(text)
    if data is None:  # no front matter: a Dotprompt body, if it is Handlebars
        return "dotprompt" if uses_handlebars(text) else "tracegrad"
    keys = {str(k) for k in data}
    if keys & TRACEGRAD_ONLY:
        return "tracegrad"
    if keys & DOTPROMPT_ONLY or any("." in k for k in keys):
        return "dotprompt"
    inp, out = data.get("input"), data.get("output")
    if isinstance(inp, dict) and ({"schema", "default"} & set(inp)):
        return "dotprompt"
    if isinstance(out, dict):
        return "dotprompt"
    if "output" not in data and uses_handlebars(_body(text)):
        return "dotprompt"
    return "tracegrad"


def _front_matter(text: str) -> dict[str, Any] | None:
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
        data = yaml.safe_load("\n".join(lines[1:end]))
    except (StopIteration, yaml.YAMLError, RecursionError):
        return {}  # tracegrad's parser reports what is wrong, with the line
    return data if isinstance(data, dict) else {}


def _body(text: str) -> str:
    lines = text.splitlines(keepends=True)
    for i in range(1, len(lines)):
        if lines[i].strip() == "---":
            return "".join(lines[i + 1:])
    return text


def parse_foreign(cls: Any, kind: str, text: str, path: Path) -> Any:
    """Parse a Prompty or Dotprompt file into a ``PromptFile`` (``cls``)."""
    if kind == "prompty":
        from .prompty import parse_prompty

        return parse_prompty(cls, text, path)
    from .dotprompt import parse_dotprompt

    return parse_dotprompt(cls, text, path)


__all__ = ["kind_of", "parse_foreign"]
