"""Prompt files: a prompt you can optimize from the command line.

A prompt file is text with YAML front matter (in the spirit of Dotprompt and Prompty)::

    ---
    model: openai:gpt-4o-mini
    input:
      question: a word problem about counting objects
    output: answer                 # the dataset field that holds the expected value
    metric: exact_match            # or choice, numeric, contains, extract:REGEX, {judge: RUBRIC}, ...
    constraints:
      - Reply with the number only.
    ---
    Answer the question.

    Question: {{ question }}

The front matter describes the task; the body is a Jinja2 template (rendered in the
sandbox) and is the one trainable variable: a ``Parameter(value_kind="template")`` whose
placeholders the optimizer must keep.

Everything is validated before any model is called (the front matter in
:mod:`tracegrad.frontmatter`), and every problem is reported as a
:class:`PromptFileError` that names the file and the line. Writing back keeps the front
matter byte for byte, replaces the file atomically and keeps the previous version beside
it as ``NAME.prompt.bak``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import template as tpl
from .core.module import Module
from .core.variable import Parameter, Variable
from .fileio import InputFileError, atomic_write, read_input
from .frontmatter import (
    DEFAULT_METRIC,
    KNOWN_KEYS,
    PromptFileError,
    _FrontMatter,
    _load_yaml,
    _nearest,
    _split,
    _stripped,
    metric_spec_text,
)

__all__ = [
    "KNOWN_KEYS",
    "PromptFile",
    "PromptFileError",
    "PromptProgram",
    "atomic_write",
    "metric_spec_text",
]


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
    metric: str | dict[str, Any] = DEFAULT_METRIC
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
            return get_metric(llm_judge(self.metric["judge"], engine=judge_engine,
                                        pass_score=self.metric.get("pass_score")))
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
        """The file text with ``new_body`` as the template and the front matter untouched."""
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
        self.check_body(new_body)
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


