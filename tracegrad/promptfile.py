"""Prompt files: a prompt you can optimize from the command line.

A prompt file is text with YAML front matter (in the spirit of Dotprompt and Prompty)::

    ---
    model: openai:gpt-4o-mini
    input:
      question: a word problem about counting objects
    output: answer                 # the dataset field that holds the expected value
    metric: exact_match            # or numeric, contains, regex:PATTERN, {judge: RUBRIC}, ...
    constraints:
      - Reply with the number only.
    ---
    Answer the question.

    Question: {{ question }}

The front matter describes the task; the body is a Jinja2 template (rendered in the
sandbox) and is the one trainable variable: a ``Parameter(value_kind="template")`` whose
placeholders the optimizer must keep.

Everything is validated before any model is called, and every problem is reported as a
:class:`PromptFileError` that names the file and the line. Writing back keeps the front
matter byte for byte, replaces the file atomically and keeps the previous version beside
it as ``NAME.prompt.bak``.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import template as tpl
from .core.module import Module
from .core.variable import Parameter, Variable
from .fileio import InputFileError, atomic_write, read_input
from .redaction import scrub_text

__all__ = [
    "KNOWN_KEYS",
    "PromptFile",
    "PromptFileError",
    "PromptProgram",
    "atomic_write",
    "metric_spec_text",
]

KNOWN_KEYS: dict[str, str] = {
    "model": "the model that runs the prompt, e.g. openai:gpt-4o-mini",
    "optimizer_model": "the model that writes feedback and rewrites the prompt (default: model)",
    "input": "the input fields: a list of names, or a mapping name -> description",
    "output": "the dataset field that holds the expected output",
    "metric": "how an output is scored: exact_match, contains, numeric, json_field_match, "
    "token_f1, regex:PATTERN, or {judge: RUBRIC}",
    "constraints": "rules every rewritten prompt must follow (list of strings)",
    "system": "a fixed system message sent before the prompt",
    "params": "sampling parameters passed to the model (temperature, max_tokens, ...)",
    "description": "what the prompt is for (shown to the optimizer)",
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


# -- front matter ----------------------------------------------------------------------


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
        for key in self.data:
            if key not in KNOWN_KEYS:
                raise PromptFileError(
                    f"unknown key '{key}'{_nearest(key, KNOWN_KEYS)} "
                    f"(known keys: {', '.join(KNOWN_KEYS)})",
                    self.ps, self.key_lines.get(key),
                )
        for key in REQUIRED_KEYS:
            if key not in self.data:
                raise PromptFileError(
                    f"missing key '{key}' in the front matter (which ends on this line): "
                    f"{KNOWN_KEYS[key]}",
                    self.ps, self.key_lines.get("---end") or 1,
                )

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

    def metric(self) -> str | dict[str, str]:
        metric = self.data.get("metric", DEFAULT_METRIC)
        if isinstance(metric, dict):
            if set(metric) != {"judge"} or not isinstance(metric["judge"], str) \
                    or not metric["judge"].strip():
                raise self.err("metric", "as a mapping must be {judge: RUBRIC}, a rubric text "
                               "for the LLM judge")
            return metric
        if not isinstance(metric, str) or not metric.strip():
            raise self.err("metric", "must be a metric name or {judge: RUBRIC}, got "
                           f"{_kind(metric)}")
        metric = metric.strip()
        if metric.startswith("regex:"):
            try:
                re.compile(metric[len("regex:"):])
            except re.error as e:
                raise self.err("metric", f"has an invalid regular expression: {e}") from None
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
        return dict(params)


# -- the prompt file ----------------------------------------------------------------------


@dataclass
class PromptFile:
    """A parsed, validated prompt file. Build one with :meth:`load` or :meth:`parse`."""

    path: Path
    text: str
    prefix: str
    body: str
    body_line: int
    inputs: dict[str, str]
    output: str
    metric: str | dict[str, str] = DEFAULT_METRIC
    model: str | None = None
    optimizer_model: str | None = None
    constraints: list[str] = field(default_factory=list)
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    key_lines: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    # -- reading ------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PromptFile:
        p = Path(path)
        try:
            raw = read_input(p, "prompt")
        except InputFileError as e:
            msg = str(e).replace("is a directory, not a file", "is a directory, not a prompt file")
            raise PromptFileError(msg, p) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise PromptFileError("not UTF-8 text", p, line) from None
        return cls.parse(text, p)

    @classmethod
    def parse(cls, text: str, path: str | os.PathLike[str] = "<prompt>") -> PromptFile:
        p = Path(path)
        ps = str(path)
        split = _split(text, ps)
        data, key_lines, nodes = _load_yaml(split, ps)
        pf = cls(
            path=p, text=text, prefix=split.prefix, body=split.body, body_line=split.body_line,
            inputs={}, output="", key_lines=key_lines,
        )
        pf._read_keys(data, nodes, ps)
        pf._check_template(split.body, ps)
        return pf

    def _line(self, key: str) -> int | None:
        return self.key_lines.get(key)

    def _read_keys(self, data: dict[str, Any], nodes: dict[str, Any], ps: str) -> None:
        fm = _FrontMatter(data, nodes, ps, self.key_lines)
        fm.check_key_names()
        self.model = _stripped(fm.optional_text("model"))
        self.optimizer_model = _stripped(fm.optional_text("optimizer_model"))
        self.system = fm.optional_text("system")
        self.description = fm.optional_text("description") or ""
        self.inputs = fm.inputs()
        self.output = fm.output(self.inputs)
        self.metric = fm.metric()
        self.constraints = fm.constraints()
        self.params = fm.params()

    # -- template checks -------------------------------------------------------------
    def _check_template(self, body: str, ps: str) -> None:
        if not body.strip():
            raise PromptFileError(
                "the template (the text after the closing '---') is empty", ps, self.body_line
            )
        fields = self._placeholders(body, ps)
        if self.output in fields:
            raise PromptFileError(
                f"the template reads '{self.output}', the expected output: that would show "
                "the model the answer",
                ps, self.field_line(self.output, body),
            )
        undeclared = sorted(fields - set(self.inputs))
        if undeclared:
            name = undeclared[0]
            raise PromptFileError(
                f"the template uses '{name}', which is not declared in 'input'"
                f"{_nearest(name, self.inputs)} (declared: {', '.join(self.inputs)}); add it to "
                "'input' or fix the template",
                ps, self.field_line(name, body),
            )
        unused = [k for k in self.inputs if k not in fields]
        if unused:
            self.warnings.append(
                f"{ps}:{self._line('input') or 1}: input field(s) {', '.join(unused)} "
                "are declared but the template never uses them"
            )

    def _placeholders(self, body: str, ps: str) -> set[str]:
        try:
            return tpl.placeholders(body)
        except tpl.TemplateError as e:
            line = self.body_line + (e.lineno - 1) if e.lineno else self.body_line
            msg = str(e).split(" (line ")[0]
            raise PromptFileError(msg, ps, line) from None

    def field_line(self, name: str, body: str | None = None) -> int:
        """The file line where the template first reads ``name`` (for error messages)."""
        body = self.body if body is None else body
        pat = re.compile(r"\b" + re.escape(name) + r"\b")
        for i, line in enumerate(body.splitlines()):
            for block in re.findall(r"\{\{.*?\}\}|\{%.*?%\}", line):
                if pat.search(block):
                    return self.body_line + i
        for i, line in enumerate(body.splitlines()):
            if pat.search(line):
                return self.body_line + i
        return self.body_line

    @property
    def fields(self) -> set[str]:
        """The input fields the template reads."""
        return tpl.placeholders(self.body)

    @property
    def name(self) -> str:
        n = self.path.name
        return n[: -len(".prompt")] if n.endswith(".prompt") else self.path.stem

    # -- datasets --------------------------------------------------------------------
    def check_dataset(self, dataset: Sequence[Any], source: str | os.PathLike[str] | None = None,
                      *, need_output: bool = True) -> None:
        """Every row must hold the template's fields (and the output field).

        Raises :class:`PromptFileError` naming the prompt file and the template line that
        reads the missing field, and the dataset row that lacks it.
        """
        ps = str(self.path)
        if len(dataset) == 0:
            where = f"the dataset {source}" if source else "the dataset"
            raise PromptFileError(f"{where} is empty", source or ps)
        fields = sorted(self.fields)
        for i, row in enumerate(dataset):
            d = row_dict(row)
            is_example = hasattr(row, "expected") and not isinstance(row, Mapping)
            where = getattr(row, "source", "") or (
                f"row {i + 1} of {source}" if source else f"row {i + 1} of the dataset"
            )
            for f in fields:
                if f not in d:
                    raise self.missing_field_error(f, where, d)
            if need_output and not is_example and self.output not in d:
                raise self.missing_field_error(self.output, where, d)
        self._trial_render(row_dict(dataset[0]), getattr(dataset[0], "source", "") or
                           (f"row 1 of {source}" if source else "row 1 of the dataset"))

    def _trial_render(self, row: Mapping[str, Any], where: str) -> None:
        """Render the template once on a real row under the render limits, so a template
        that only blows up on data (``range(10**5)|join(word * 10**5)``) is refused here,
        before any call, rather than failing on every example of the run."""
        try:
            tpl.check(self.body, {f: row.get(f) for f in self.fields})
        except tpl.TemplateError as e:
            line = self.body_line + (e.lineno - 1) if e.lineno else self.body_line
            raise PromptFileError(f"{str(e).split(' (line ')[0]} (rendering {where})",
                                  str(self.path), line) from None

    def missing_field_error(self, name: str, where: str, row: Mapping[str, Any] | None = None
                            ) -> PromptFileError:
        """The error for a dataset row (``where``: file:line or a description) lacking ``name``."""
        have = ""
        if row is not None:
            have = f"{_nearest(name, row)} (it has: {', '.join(sorted(row)) or 'no fields'})"
        if name == self.output:
            return PromptFileError(
                f"'output: {name}' names the field with the expected value, but {where} has "
                f"no field '{name}'{have}",
                str(self.path), self._line("output"),
            )
        return PromptFileError(
            f"the template reads '{name}', but {where} has no field '{name}'{have}",
            str(self.path), self.field_line(name),
        )

    def load_dataset(self, path: str | os.PathLike[str]) -> Any:
        """Load a dataset file for this prompt (``tracegrad.train.load_dataset``) and check it.

        Dataset problems (bad JSON, ...) raise ``DatasetError`` (file:line of the dataset);
        a row that lacks a field the template reads, or the output field, raises
        :class:`PromptFileError` at the prompt line that needs the field.
        """
        from .train.data import DatasetError
        from .train.data import load_dataset as _load

        fields = sorted(self.fields)
        try:
            ds = _load(path, input_fields=fields, output_field=self.output)
        except DatasetError as e:
            m = re.match(r"missing (?:output field|input fields?) '([^']+)'", e.reason)
            if m and e.line is not None:
                raise self.missing_field_error(m.group(1), f"{e.file}:{e.line}",
                                               _raw_row(e.file, e.line)) from None
            raise
        self.check_dataset(ds, path)
        return ds

    # -- scoring ---------------------------------------------------------------------
    def metric_fn(self, judge_engine: Any = None) -> Any:
        """The metric named in the front matter, as ``f(prediction, expected) -> (score, why)``.

        ``{judge: RUBRIC}`` grades with ``judge_engine`` (default: the backward engine).
        """
        from .train.metrics import get_metric, llm_judge

        ps = str(self.path)
        if isinstance(self.metric, dict):
            return get_metric(llm_judge(self.metric["judge"], engine=judge_engine))
        try:
            return get_metric(self.metric)
        except (ValueError, TypeError) as e:
            raise PromptFileError(f"'metric' {e}", ps, self._line("metric")) from None

    @property
    def uses_judge(self) -> bool:
        return isinstance(self.metric, dict) or str(self.metric).lower().startswith("llm_judge")

    def check_metric(self, dataset: Sequence[Any], source: str | os.PathLike[str] | None = None
                     ) -> None:
        """Score each expected value against itself: a metric that cannot read the expected
        values (numeric with no number, json_field_match with no object) fails here, before
        any call, instead of at step 3."""
        if self.uses_judge:
            return
        fn = self.metric_fn()
        for i, row in enumerate(dataset):
            expected = getattr(row, "expected", None) if not isinstance(row, Mapping) \
                else row.get(self.output)
            try:
                fn(expected, expected)
            except (ValueError, TypeError) as e:
                where = getattr(row, "source", "") or f"row {i + 1} of {source or 'the dataset'}"
                raise PromptFileError(
                    f"metric '{metric_spec_text(self.metric)}' cannot use the expected value of "
                    f"{where}: {e}",
                    str(self.path), self._line("metric") or self._line("output"),
                ) from None

    # -- running ---------------------------------------------------------------------
    def to_parameter(self) -> Parameter:
        role = f"prompt template (Jinja2) of the '{self.name}' prompt"
        if self.description:
            role += f": {self.description.strip()}"
        return Parameter(
            self.body,
            role=role,
            name=_param_name(self.name),
            constraints=self.constraints,
            value_kind="template",
        )

    def to_module(self, engine: Any) -> PromptProgram:
        """A :class:`~tracegrad.Module` whose ``forward(**inputs)`` returns the output Variable."""
        return PromptProgram(self, engine)

    # -- writing ---------------------------------------------------------------------
    def render_text(self, new_body: str) -> str:
        """The file text with ``new_body`` as the template (scrubbed of secrets: a model wrote
        it) and the front matter (the user's own) byte for byte."""
        new_body = scrub_text(new_body)
        if self.body.endswith("\n") and not new_body.endswith("\n"):
            nl = "\r\n" if self.body.endswith("\r\n") else "\n"
            new_body += nl
        return self.prefix + new_body

    def check_body(self, new_body: str) -> None:
        """A new template must parse and read exactly the fields the old one read."""
        ps = str(self.path)
        try:
            new_fields = tpl.placeholders(new_body)
        except tpl.TemplateError as e:
            raise PromptFileError(f"the new template does not parse: {e}", ps) from None
        if new_fields != self.fields:
            lost = sorted(self.fields - new_fields)
            extra = sorted(new_fields - self.fields)
            parts = []
            if lost:
                parts.append(f"drops {', '.join(lost)}")
            if extra:
                parts.append(f"adds {', '.join(extra)}")
            raise PromptFileError(
                f"the new template {' and '.join(parts)}; its placeholders must stay the same",
                ps,
            )

    def write(self, path: str | os.PathLike[str] | None, new_body: str) -> Path:
        """Write the file with ``new_body`` to ``path`` (default: this file), atomically.

        An existing file at ``path`` is kept as ``NAME.bak`` first (``x.prompt`` ->
        ``x.prompt.bak``). Writing elsewhere (``--out``) leaves this file untouched.
        Returns the path written.
        """
        self.check_body(scrub_text(new_body))
        target = Path(path) if path is not None else self.path
        data = self.render_text(new_body).encode("utf-8")
        if target.exists():
            old = target.read_bytes()
            if old != data:
                atomic_write(backup_path(target), old)
        atomic_write(target, data)
        return target


def backup_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".bak")


# -- the module --------------------------------------------------------------------------


class PromptProgram(Module):
    """The program a prompt file describes: one templated LLM call.

    ``forward(**inputs)`` (or ``forward(row)``) fills the template with the declared input
    fields (extra fields such as the expected output are ignored) and returns the model's
    reply as a Variable. ``self.prompt`` is the trainable template.
    """

    def __init__(self, promptfile: PromptFile, engine: Any) -> None:
        from .ops.llm import FormattedLLMCall

        self.promptfile = promptfile
        self.prompt = promptfile.to_parameter()
        self.call = FormattedLLMCall(
            engine,
            self.prompt,
            system=promptfile.system,
            role=f"the model's reply (compared with the expected '{promptfile.output}')",
            name=_param_name(promptfile.name),
            **promptfile.params,
        )

    def _fields(self, row: Mapping[str, Any] | None, inputs: dict[str, Any]) -> dict[str, Any]:
        data = {**row_dict(row), **inputs} if row is not None else dict(inputs)
        pf = self.promptfile
        out: dict[str, Any] = {}
        for name in pf.fields:
            if name not in data:
                raise KeyError(f"missing input field '{name}'")
            value = data[name]
            if isinstance(value, Variable):
                out[name] = value
            else:
                role = pf.inputs.get(name) or f"input field '{name}'"
                out[name] = Variable(value, role=role, name=name)
        return out

    def forward(self, row: Mapping[str, Any] | None = None, /, **inputs: Any) -> Variable:
        return self.call(**self._fields(row, inputs))

    async def aforward(self, row: Mapping[str, Any] | None = None, /, **inputs: Any) -> Variable:
        return await self.call.acall(**self._fields(row, inputs))


# -- helpers -----------------------------------------------------------------------------


def row_dict(row: Any) -> dict[str, Any]:
    """A dataset row as a plain dict, whatever shape the data layer gives it."""
    if row is None:
        return {}
    if isinstance(row, Mapping):
        return dict(row)
    inputs = getattr(row, "inputs", None)
    if isinstance(inputs, Mapping) and hasattr(row, "expected"):  # train.Example
        return dict(inputs)
    for attr in ("to_dict", "as_dict"):
        fn = getattr(row, attr, None)
        if callable(fn):
            d = fn()
            if isinstance(d, Mapping):
                return dict(d)
    if hasattr(row, "__dict__"):
        return dict(vars(row))
    raise TypeError(f"cannot read a dataset row of type {type(row).__name__}")


def _raw_row(file: str, line: int) -> dict[str, Any] | None:
    """The JSON object on ``line`` of a JSONL file, to list its fields in an error."""
    import json

    try:
        with open(file, encoding="utf-8-sig") as f:
            for i, text in enumerate(f, start=1):
                if i == line:
                    row = json.loads(text)
                    return row if isinstance(row, dict) else None
    except (OSError, ValueError):
        return None
    return None


def _param_name(name: str) -> str:
    s = re.sub(r"\W+", "_", name).strip("_")
    return s or "prompt"


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
