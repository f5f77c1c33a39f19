"""A prompt file's YAML front matter: parsed with the line of every key, and checked.

Every problem is a :class:`PromptFileError` naming the file and the line, so a typo in
the front matter reads like a compiler error, not like a YAML library's traceback. The
parser refuses what a prompt file never needs and an attacker would use: duplicate
keys, alias bombs, deep nesting.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

KNOWN_KEYS: dict[str, str] = {
    "model": "the model that runs the prompt, e.g. openai:gpt-4o-mini",
    "optimizer_model": "the model that writes feedback and rewrites the prompt (default: model)",
    "input": "the input fields: a list of names, or a mapping name -> description",
    "output": "the dataset field that holds the expected output",
    "metric": "how an output is scored: exact_match, exact, contains, choice, numeric, "
    "json_field_match, token_f1, regex:PATTERN, extract:REGEX, or {judge: RUBRIC} "
    "(optionally with pass_score: 0-10)",
    "constraints": "rules every rewritten prompt must follow (list of strings)",
    "system": "a fixed system message sent before the prompt",
    "params": "sampling parameters passed to the model (temperature, max_tokens, ...)",
    "description": "what the prompt is for (shown to the optimizer)",
    "demos": "few-shot demos optimize may choose: a number N (up to N), or "
    "{max: N, examples: [{input: ..., output: ...}, ...]} (what optimize writes back)",
    "trainable": "with role markers in the template: the message(s) the optimizer rewrites "
    "(a role, a name such as user_2, a message number from 1, or a list; default: system)",
}


REQUIRED_KEYS = ("input", "output")


_YAML_FIRST_LINE = 2  # the file starts with '---', so YAML line 0 is file line 2


DEFAULT_METRIC = "exact_match"


class PromptFileError(ValueError):
    """A prompt file (or the dataset used with it) that cannot be used, with file and line."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None,
                 line: int | None = None) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = self.path or "<prompt>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.message}"


class PromptFileErrors(PromptFileError):
    """Several problems of one file, reported together (each ``FILE:LINE: ...``, one a
    line, in file order); ``message``, ``path`` and ``line`` are the first one's."""

    def __init__(self, errors: list[PromptFileError]) -> None:
        self.errors = sorted(errors, key=lambda e: e.line or 0)
        first = self.errors[0]
        super().__init__(first.message, first.path, first.line)

    def __str__(self) -> str:
        return "\n".join(PromptFileError.__str__(e) for e in self.errors)


def raise_all(errors: list[PromptFileError]) -> None:
    """Raise nothing, the one error, or all of them as :class:`PromptFileErrors`."""
    unique = list({str(e): e for e in errors}.values())
    if len(unique) == 1:
        raise unique[0]
    if unique:
        raise PromptFileErrors(unique)


@dataclass
class _Split:
    prefix: str  # everything up to and including the closing '---' line, byte for byte
    yaml_text: str
    yaml_line: int  # file line (1-based) of the first YAML line
    body: str
    body_line: int  # file line (1-based) of the first body line


def _split(text: str, path: str) -> _Split:
    lines = text.splitlines(keepends=True)
    first = lines[0].lstrip("\ufeff").rstrip("\r\n").rstrip() if lines else ""
    if first != "---":
        raise PromptFileError(
            "missing front matter: a prompt file must start with a line '---', then YAML "
            "(model, input, output, metric...), then a closing '---', then the template",
            path, 1,
        )
    for i in range(1, len(lines)):
        if lines[i].rstrip("\r\n").rstrip() == "---":
            prefix = "".join(lines[: i + 1])
            return _Split(
                prefix=prefix,
                yaml_text="".join(lines[1:i]),
                yaml_line=_YAML_FIRST_LINE,
                body="".join(lines[i + 1 :]),
                body_line=i + 2,
            )
    raise PromptFileError(
        "the front matter opened with '---' on line 1 is never closed: add a line '---' "
        "between the YAML and the template",
        path, 1,
    )


def _nearest(name: str, options: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" -- did you mean '{match[0]}'?" if match else ""


def metric_spec_text(metric: str | Mapping[str, Any]) -> str:
    if isinstance(metric, Mapping):
        return "judge: " + str(metric.get("judge", ""))
    return str(metric)


def _stripped(text: str | None) -> str | None:
    return None if text is None else text.strip()


@dataclass
class _FrontMatter:
    """The parsed front matter, read key by key.

    Each reader returns one validated value or raises a :class:`PromptFileError` on the
    line of the offending list entry when YAML knows it, else on the line of the key: a
    user with a long front matter should not have to hunt for the mistake.
    """

    data: dict[str, Any]
    nodes: dict[str, Any]  # key -> YAML value node, for the lines of list entries
    ps: str
    key_lines: dict[str, int]

    def err(self, key: str, msg: str, node: Any = None) -> PromptFileError:
        line = node.start_mark.line + _YAML_FIRST_LINE if node is not None \
            else self.key_lines.get(key)
        return PromptFileError(f"'{key}' {msg}", self.ps, line)

    def entry_node(self, key: str, i: int) -> Any:
        """The YAML node of entry ``i`` of ``key``'s list (for a mapping: the (key node,
        value node) pair), or None when the value is not a list or mapping in the file --
        a lone name read as a one-entry list has no entry nodes, only the key's line."""
        node = self.nodes.get(key)
        if not isinstance(node, yaml.SequenceNode | yaml.MappingNode):
            return None
        return node.value[i] if i < len(node.value) else None

    def check_key_names(self) -> None:
        errors = [PromptFileError(
            f"unknown key '{key}'{_nearest(key, KNOWN_KEYS)} (known keys: {', '.join(KNOWN_KEYS)})",
            self.ps, self.key_lines.get(key)) for key in self.data if key not in KNOWN_KEYS]
        errors += [PromptFileError(
            f"missing key '{key}' in the front matter (which ends on this line): "
            f"{KNOWN_KEYS[key]}", self.ps, self.key_lines.get("---end") or 1)
            for key in REQUIRED_KEYS if key not in self.data]
        raise_all(errors)

    def optional_text(self, key: str) -> str | None:
        v = self.data.get(key)
        if v is None:
            return None
        if not isinstance(v, str) or not v.strip():
            raise self.err(key, f"must be a non-empty string, got {_kind(v)}")
        return v

    def inputs(self) -> dict[str, str]:
        """``input``: a list of names (or one name), or a mapping name -> description."""
        raw = self.data["input"]
        if isinstance(raw, str):
            raw = [raw]
        if isinstance(raw, list):
            inputs = self._input_names(raw)
        elif isinstance(raw, dict):
            inputs = self._input_descriptions(raw)
        else:
            raise self.err("input", "must be a list of field names or a mapping name -> "
                           f"description, got {_kind(raw)}")
        if not inputs:
            raise self.err("input", "must name at least one field")
        return inputs

    def _input_names(self, names: list[Any]) -> dict[str, str]:
        inputs: dict[str, str] = {}
        for i, name in enumerate(names):
            if not isinstance(name, str) or not _is_identifier(name):
                raise self.err("input", f"entries must be field names (identifiers), got "
                               f"{name!r}", self.entry_node("input", i))
            if name in inputs:
                raise self.err("input", f"lists the field '{name}' twice",
                               self.entry_node("input", i))
            inputs[name] = ""
        return inputs

    def _input_descriptions(self, raw: dict[Any, Any]) -> dict[str, str]:
        inputs: dict[str, str] = {}
        for i, (name, desc) in enumerate(raw.items()):
            pair = self.entry_node("input", i)
            node = pair[0] if pair is not None else None  # the name's node
            if not isinstance(name, str) or not _is_identifier(name):
                raise self.err("input", f"keys must be field names (identifiers), got {name!r}",
                               node)
            if desc is not None and not isinstance(desc, str | int | float):
                raise self.err("input", f"description of '{name}' must be text, got "
                               f"{_kind(desc)}", node)
            inputs[name] = "" if desc is None else str(desc)
        return inputs

    def output(self, inputs: Mapping[str, str]) -> str:
        out = self.data["output"]
        if not isinstance(out, str) or not _is_identifier(out):
            raise self.err("output", "must be the name of the dataset field with the expected "
                           f"value, got {out!r}")
        if out in inputs:
            raise self.err("output", f"'{out}' is also an input: the prompt would be shown the "
                           "answer")
        return out

    def metric(self) -> str | dict[str, Any]:
        metric = self.data.get("metric", DEFAULT_METRIC)
        if isinstance(metric, dict):
            return self.judge_metric(metric)
        if not isinstance(metric, str) or not metric.strip():
            raise self.err("metric", "must be a metric name or {judge: RUBRIC}, got "
                           f"{_kind(metric)}")
        metric = metric.strip()
        for prefix in ("regex:", "extract:"):
            if metric.startswith(prefix):
                try:
                    re.compile(metric[len(prefix):])
                except re.error as e:
                    raise self.err("metric", f"has an invalid regular expression: {e}") from None
        return metric

    def judge_metric(self, metric: dict[str, Any]) -> dict[str, Any]:
        """``{judge: RUBRIC}``, optionally with ``pass_score`` (0-10): the grade that counts
        as a success instead of the judge's PASS verdict."""
        if not set(metric) <= {"judge", "pass_score"} or not isinstance(metric.get("judge"), str) \
                or not metric["judge"].strip():
            raise self.err("metric", "as a mapping must be {judge: RUBRIC}, a rubric text "
                           "for the LLM judge, optionally with pass_score: 0-10")
        threshold = metric.get("pass_score")
        if threshold is not None and (isinstance(threshold, bool)
                                      or not isinstance(threshold, int | float)
                                      or not 0 <= threshold <= 10):
            raise self.err("metric", f"pass_score must be a number from 0 to 10, got {threshold!r}")
        return metric

    def constraints(self) -> list[str]:
        cons = self.data.get("constraints", [])
        if cons is None:
            cons = []
        if isinstance(cons, str):
            cons = [cons]
        if not isinstance(cons, list):
            raise self.err("constraints", f"must be a list of strings, got {_kind(cons)}")
        for i, c in enumerate(cons):
            if not isinstance(c, str) or not c.strip():
                raise self.err("constraints", "entries must be non-empty strings, got "
                               f"{_kind(c)}", self.entry_node("constraints", i))
        return [c.strip() for c in cons]

    def demos(self) -> tuple[int, list[dict[str, str]]]:
        """(most demos the prompt may show, the ones it shows now); (0, []) without the key."""
        raw = self.data.get("demos")
        if raw is None:
            return 0, []
        if isinstance(raw, int) and not isinstance(raw, bool):
            raw = {"max": raw}
        if not isinstance(raw, dict) or set(raw) - {"max", "examples"}:
            raise self.err("demos", "must be a number, or a mapping with 'max' and "
                           f"'examples', got {_kind(raw)}")
        most, examples = raw.get("max"), raw.get("examples") or []
        if not isinstance(most, int) or isinstance(most, bool) or not 1 <= most <= 32:
            raise self.err("demos", f"'max' must be a whole number from 1 to 32, got {most!r}")
        if not isinstance(examples, list) or len(examples) > most:
            raise self.err("demos", f"'examples' must be a list of at most {most} entries")
        out = []
        for i, ex in enumerate(examples):
            if not isinstance(ex, dict) or set(ex) != {"input", "output"} or not all(
                    isinstance(v, str) and v.strip() for v in ex.values()):
                raise self.err("demos", f"example {i + 1} must be a mapping with non-empty "
                               "'input' and 'output' strings")
            out.append({"input": ex["input"], "output": ex["output"]})
        return most, out

    def params(self) -> dict[str, Any]:
        params = self.data.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
            raise self.err("params", f"must be a mapping of sampling parameters, got "
                           f"{_kind(params)}")
        for forbidden in ("messages", "model", "stream"):
            if forbidden in params:
                raise self.err("params", f"may not set '{forbidden}'")
        for name, value in params.items():
            problem = _param_problem(name, value)
            if problem:
                node = self._param_node(name)
                if node is None:  # no node: the line of the params key
                    raise self.err("params", f"'{name}' {problem}")
                raise self.err(f"params.{name}", problem, node)
        return dict(params)

    def _param_node(self, name: str) -> Any:
        node = self.nodes.get("params")
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == name:
                    return v
        return None


# The sampling parameters a server would reject or misuse: caught at load, with the line,
# instead of sent with every request. (kind, low, high); None: unbounded on that side.
_PARAM_RANGES: dict[str, tuple[type, float | None, float | None]] = {
    "temperature": (float, 0.0, 2.0),
    "top_p": (float, 0.0, 1.0),
    "presence_penalty": (float, -2.0, 2.0),
    "frequency_penalty": (float, -2.0, 2.0),
    "max_tokens": (int, 1, None),
    "max_completion_tokens": (int, 1, None),
    "n": (int, 1, 1),  # one reply per call: the cache, meter and metric assume it
    "seed": (int, None, None),
    "top_logprobs": (int, 0, 20),
}


def _param_problem(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be sent as ``name``, or None."""
    if name == "stop":
        ok = isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(x, str) for x in value))
        return None if ok else f"must be a string or a list of strings, got {_kind(value)}"
    rule = _PARAM_RANGES.get(name)
    if rule is None:
        return None
    kind, lo, hi = rule
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or (kind is int and not isinstance(value, int)):
        what = "a whole number" if kind is int else "a number"
        return f"must be {what}, got {_kind(value)} {value!r}"
    if value != value or (lo is not None and value < lo) or (hi is not None and value > hi):
        span = f"{lo}" if lo == hi else f"between {lo} and {hi}" if lo is not None and hi is not None else (
            f"at least {lo}" if lo is not None else f"at most {hi}")
        return f"must be {span}, got {value!r}"
    return None


def _is_identifier(name: str) -> bool:
    return name.isidentifier()


def _kind(v: Any) -> str:
    if v is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(v), type(v).__name__)


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


_MAX_YAML_NODES = 100_000


def _expanded_size(root: Any, limit: int = _MAX_YAML_NODES) -> int:
    """How many YAML nodes the front matter holds with aliases expanded (stops past limit)."""
    count, stack = 0, [root]
    while stack and count <= limit:
        n = stack.pop()
        count += 1
        if isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
        elif isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                stack.extend((k, v))
    return count


def _load_yaml(split: _Split, ps: str) -> tuple[dict[str, Any], dict[str, int], dict[str, Any]]:
    """Parse the front matter; return data, the file line of each key, and value nodes."""
    offset = split.yaml_line  # YAML line 0 is file line ``offset``
    if not split.yaml_text.strip():
        raise PromptFileError(
            "the front matter is empty: it needs at least 'input' and 'output'", ps, 1
        )
    try:
        node = yaml.compose(split.yaml_text, Loader=_UniqueKeyLoader)
        if node is not None and _expanded_size(node) > _MAX_YAML_NODES:
            # "billion laughs": a few lines of aliases that expand to gigabytes once the
            # params are serialised into every request
            raise PromptFileError(
                f"the front matter is too large once its aliases (*name) are expanded (over "
                f"{_MAX_YAML_NODES} values); a prompt file needs no aliases", ps, offset)
        data = yaml.load(split.yaml_text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader
    except RecursionError:
        raise PromptFileError("the front matter is nested too deeply", ps, offset) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + offset if mark is not None else 1
        problem = e.problem or "invalid YAML"
        if e.context:
            problem = f"{e.context}: {problem}"
            cm = e.context_mark
            if cm is not None and mark is not None and cm.line != mark.line:
                problem += f" (the construct started on line {cm.line + offset})"
        raise PromptFileError(f"invalid YAML in the front matter: {problem}", ps, line) from None
    except yaml.YAMLError as e:
        raise PromptFileError(f"invalid YAML in the front matter: {e}", ps, offset) from None
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        raise PromptFileError(
            "the front matter must be a YAML mapping (key: value lines)", ps, offset
        )
    key_lines: dict[str, int] = {}
    nodes: dict[str, Any] = {}
    for knode, vnode in node.value:
        key = knode.value
        if key in key_lines:
            raise PromptFileError(
                f"the key '{key}' appears twice (first on line {key_lines[key]})",
                ps, knode.start_mark.line + offset,
            )
        key_lines[str(key)] = knode.start_mark.line + offset
        nodes[str(key)] = vnode
    key_lines["---end"] = split.body_line - 1
    for k in list(data):
        if not isinstance(k, str):
            raise PromptFileError(f"front matter keys must be names, got {k!r}", ps, offset)
    return data, key_lines, nodes


class _BlockDumper(yaml.SafeDumper):
    """Multi-line demo texts as ``|`` blocks, readable and diffable in the prompt file."""


def _str_block(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_block)


def demos_yaml(most: int, demos: list[dict[str, str]]) -> str:
    """The ``demos`` key as optimize writes it back (read again by ``_FrontMatter.demos``)."""
    shown = [{"input": str(d["input"]), "output": str(d["output"])} for d in demos]
    return yaml.dump({"demos": {"max": most, "examples": shown}}, Dumper=_BlockDumper,
                     sort_keys=False, allow_unicode=True, width=100)


def replace_key(prefix: str, key_lines: dict[str, int], key: str, block: str) -> str:
    """The front matter ``prefix`` with the lines of top-level ``key`` replaced by ``block``.

    Only that key's lines change (up to the next key or the closing ``---``): comments
    and formatting elsewhere are kept byte for byte.
    """
    start = key_lines[key]
    end = min(n for n in key_lines.values() if n > start)
    lines = prefix.splitlines(keepends=True)
    if lines[0].endswith("\r\n"):
        block = block.replace("\n", "\r\n")
    return "".join(lines[:start - 1]) + block + "".join(lines[end - 1:])
