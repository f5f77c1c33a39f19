"""What reading a Prompty or a Dotprompt file shares: the lines of nested keys, the
``tracegrad`` section that says how to score and what to train, and sampling options.

Those formats describe a prompt, not a task: the dataset field with the expected value,
the metric and the trainable messages come from a ``tracegrad:`` mapping in the front
matter (both formats tolerate unknown keys; Dotprompt's ``tracegrad.metric: ...`` dotted
form works too). Every problem is collected with its line, so a file's errors are
reported together.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from ..frontmatter import PromptFileError, _kind, _param_problem

TRACEGRAD_KEYS = {
    "output": "the dataset field that holds the expected output (default: expected)",
    "metric": "how an output is scored (default: exact_match)",
    "trainable": "the message(s) the optimizer may rewrite: a role, a name such as user_2, "
    "a number from 1, or a list (default: the system message)",
    "constraints": "rules every rewritten message must follow",
    "optimizer_model": "the model that writes feedback and rewrites the prompt",
}


class Problems:
    """Errors of one file, collected so that all of them are reported at once."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[PromptFileError] = []

    def add(self, message: str, line: int | None) -> None:
        self.errors.append(PromptFileError(message, self.path, line))

    @contextmanager
    def collect(self) -> Iterator[None]:
        from ..frontmatter import PromptFileErrors

        try:
            yield
        except PromptFileErrors as e:
            self.errors.extend(e.errors)
        except PromptFileError as e:
            self.errors.append(e)

    def raise_any(self) -> None:
        from ..frontmatter import raise_all

        raise_all(self.errors)


class Lines:
    """File lines of nested front-matter keys (``model.options.temperature``)."""

    def __init__(self, root: Any, offset: int, fallback: int) -> None:
        self.root, self.offset, self.fallback = root, offset, fallback

    def __call__(self, *path: str | int) -> int:
        node = self.root
        line = self.fallback
        for key in path:
            found = None
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if k.value == key:
                        line = k.start_mark.line + self.offset
                        found = v
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) \
                    and key < len(node.value):
                found = node.value[key]
                line = found.start_mark.line + self.offset
            if found is None:
                return line
            node = found
        return line


_REF = re.compile(r"^\$\{(env|file):([^}]*)\}$", re.IGNORECASE)


def resolve(value: Any, base: Path, line: int, problems: Problems) -> Any:
    """``${env:VAR}``, ``${env:VAR:default}`` and ``${file:path}`` (relative to the prompt
    file and inside its folder; .json/.yaml are parsed) resolved for this run only: the
    file keeps the reference, since write-back never rewrites the front matter."""
    if isinstance(value, dict):
        return {k: resolve(v, base, line, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, base, line, problems) for v in value]
    m = _REF.match(value) if isinstance(value, str) else None
    if m is None:
        return value
    kind, ref = m.group(1).lower(), m.group(2)
    if kind == "env":
        name, _, default = ref.partition(":")
        got = os.environ.get(name)
        if got is None and not default:
            problems.add(f"the environment variable {name} is not set (the file reads "
                         f"'${{env:{name}}}'; set it or give a default: ${{env:{name}:VALUE}})",
                         line)
        return got if got is not None else default
    return _read_ref(ref, base, line, problems)


def _read_ref(ref: str, base: Path, line: int, problems: Problems) -> Any:
    root = base.resolve()
    target = (root / ref).resolve()
    if not target.is_relative_to(root):
        problems.add(f"'${{file:{ref}}}' points outside the prompt file's folder", line)
        return None
    try:
        text = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        problems.add(f"'${{file:{ref}}}' cannot be read: {type(e).__name__}: "
                     f"{getattr(e, 'strerror', None) or e}", line)
        return None
    if target.suffix == ".json":
        import json

        try:
            return json.loads(text)
        except ValueError as e:
            problems.add(f"'${{file:{ref}}}' is not valid JSON: {e}", line)
            return None
    if target.suffix in (".yaml", ".yml"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            problems.add(f"'${{file:{ref}}}' is not valid YAML", line)
            return None
    return text


def tracegrad_section(data: dict[str, Any], lines: Lines, problems: Problems
                      ) -> dict[str, Any]:
    """The ``tracegrad`` mapping (plus ``tracegrad.KEY`` dotted keys), checked."""
    section = data.get("tracegrad") or {}
    if not isinstance(section, dict):
        problems.add(f"'tracegrad' must be a mapping ({', '.join(TRACEGRAD_KEYS)}), got "
                     f"{_kind(section)}", lines("tracegrad"))
        section = {}
    section = dict(section)
    for key, value in data.items():
        if isinstance(key, str) and key.startswith("tracegrad."):
            section[key[len("tracegrad."):]] = value
    for key in section:
        if key not in TRACEGRAD_KEYS:
            from ..frontmatter import _nearest

            problems.add(f"unknown key 'tracegrad.{key}'{_nearest(str(key), TRACEGRAD_KEYS)} "
                         f"(known: {', '.join(TRACEGRAD_KEYS)})", lines("tracegrad", key))
    return section


def sampling_params(options: dict[str, Any], names: dict[str, str], where: Lines,
                    path: tuple[str, ...], problems: Problems) -> dict[str, Any]:
    """Options named the format's way (``maxOutputTokens``) as OpenAI parameters
    (``max_tokens``), each checked as a tracegrad ``params`` entry is."""
    params: dict[str, Any] = {}
    extra = options.get("additionalProperties")
    for key, value in [*options.items(), *((extra or {}).items() if isinstance(extra, dict)
                                           else ())]:
        if key == "additionalProperties":
            continue
        name = names.get(key, key)
        if name is None:
            continue
        if name in ("messages", "model", "stream"):
            problems.add(f"'{key}' may not be set in the options", where(*path, key))
            continue
        problem = _param_problem(name, value)
        if problem:
            problems.add(f"'{'.'.join((*path, key))}' {problem}", where(*path, key))
            continue
        params[name] = value
    return params
