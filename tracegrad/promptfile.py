"""Prompt files: a prompt you can optimize from the command line.

A prompt file is text with YAML front matter (in the spirit of Dotprompt and Prompty)::

    ---
    input: {question: a word problem about counting objects}
    output: answer                 # the dataset field that holds the expected value
    metric: exact_match            # or choice, numeric, contains, extract:REGEX, {judge: RUBRIC}, ...
    ---
    Answer the question: {{ question }}

The front matter describes the task; the body is a Jinja2 template (rendered in the
sandbox) and is the trainable variable (with a few-shot ``demos`` list if the front matter
asks for one): a ``Parameter(value_kind="template")`` whose placeholders must be kept.
Writing back keeps the front matter byte for byte, except the ``demos`` key it fills.

Everything is validated before any model is called (the front matter in
:mod:`tracegrad.frontmatter`), and every problem is reported as a
:class:`PromptFileError` that names the file and the line. Writing back keeps the front
matter as written, replaces the file atomically and keeps the previous version beside it
as ``NAME.prompt.bak``.
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
from .formats.chat import ChatTemplate, Piece
from .formats.foreign import Problems
from .formats.handlebars import uses_handlebars
from .frontmatter import (
    DEFAULT_METRIC,
    KNOWN_KEYS,
    PromptFileError,
    PromptFileErrors,
    _FrontMatter,
    _load_yaml,
    _nearest,
    _split,
    _stripped,
    demos_yaml,
    metric_spec_text,
    replace_key,
)
from .redaction import scrub_text

__all__ = [
    "KNOWN_KEYS",
    "PromptFile",
    "PromptFileError",
    "PromptFileErrors",
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
    format: str = "tracegrad"  # or "prompty", "dotprompt"
    chat: ChatTemplate | None = None  # the messages, when the body holds several
    defaults: dict[str, Any] = field(default_factory=dict)  # input values when a row has none
    samples: dict[str, Any] = field(default_factory=dict)  # example values (Prompty 'example')
    demos_max: int = 0  # front matter 'demos': how many few-shot demos optimize may choose
    demos: list[dict[str, str]] = field(default_factory=list)  # the ones the file holds

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
        """Parse a tracegrad prompt file, a Prompty file (``.prompty``) or a Dotprompt file
        (told from a tracegrad ``.prompt`` file by its content)."""
        from .formats import kind_of

        p = Path(path)
        ps = str(path)
        kind = kind_of(p, text)
        if kind != "tracegrad":
            from .formats import parse_foreign

            return parse_foreign(cls, kind, text, p)
        split = _split(text, ps)
        data, key_lines, nodes = _load_yaml(split, ps)
        pf = cls(
            path=p, text=text, prefix=split.prefix, body=split.body, body_line=split.body_line,
            inputs={}, output="", key_lines=key_lines,
        )
        problems = Problems(ps)
        with problems.collect():
            pf._read_keys(data, nodes, ps, problems)
        with problems.collect():
            pf._read_chat(data, ps)
            if pf.demos_max and pf.chat is not None:
                raise PromptFileError("'demos' works with a one-template prompt; this body has "
                                      "role markers (several messages)", ps, pf._line("demos"))
        if not problems.errors or pf.inputs:
            with problems.collect():
                pf._check_template(split.body, ps, check_inputs=bool(pf.inputs))
        problems.raise_any()
        return pf

    def _line(self, key: str) -> int | None:
        return self.key_lines.get(key)

    def _read_keys(self, data: dict[str, Any], nodes: dict[str, Any], ps: str,
                   problems: Problems) -> None:
        """Every key is read even after one fails, so all mistakes are reported at once."""
        fm = _FrontMatter(data, nodes, ps, self.key_lines)
        with problems.collect():
            fm.check_key_names()
        for attr, read in (
            ("model", lambda: _stripped(fm.optional_text("model"))),
            ("optimizer_model", lambda: _stripped(fm.optional_text("optimizer_model"))),
            ("system", lambda: fm.optional_text("system")),
            ("description", lambda: fm.optional_text("description") or ""),
            ("inputs", fm.inputs),
            ("output", lambda: fm.output(self.inputs) if "output" in data else ""),
            ("metric", fm.metric),
            ("constraints", fm.constraints),
            ("params", fm.params),
        ):
            if attr == "inputs" and "input" not in data:
                continue
            with problems.collect():
                setattr(self, attr, read())
        with problems.collect():
            self.demos_max, self.demos = fm.demos()

    def _read_chat(self, data: dict[str, Any], ps: str) -> None:
        """A body with role markers (``system:``, ``user:`` alone on a line) is several
        messages; ``trainable`` says which the optimizer rewrites (default: system)."""
        from .formats.chat import choose_trainable, has_markers, split_markers

        line = self.key_lines.get("trainable")
        if not has_markers(self.body):
            if "trainable" in data:
                raise PromptFileError("'trainable' names messages, but the template has no "
                                      "role markers ('system:', 'user:' alone on a line)",
                                      ps, line)
            return
        if self.system is not None:
            raise PromptFileError("'system' and a 'system:' message in the template: keep "
                                  "one of them", ps, self.key_lines.get("system"))
        self.chat = split_markers(self.body, len(self.prefix), self.body_line)
        problem = choose_trainable(self.chat, data.get("trainable"))
        if problem:
            raise PromptFileError(f"'trainable' {problem}", ps, line or self.body_line)

    # -- template checks -------------------------------------------------------------
    def _check_template(self, body: str, ps: str, check_inputs: bool = True) -> None:
        if not body.strip():
            raise PromptFileError(
                "the template (the text after the closing '---') is empty", ps, self.body_line
            )
        fields = self._all_placeholders(body, ps)
        problems = Problems(ps)
        if self.output and self.output in fields:
            problems.add(f"the template reads '{self.output}', the expected output: that "
                         "would show the model the answer", self.field_line(self.output, body))
        undeclared = sorted(fields - set(self.inputs)) if check_inputs else []
        for name in undeclared:
            problems.add(
                f"the template uses '{name}', which is not declared in 'input'"
                f"{_nearest(name, self.inputs)} (declared: {', '.join(self.inputs)}); add it to "
                "'input' or fix the template", self.field_line(name, body))
        problems.raise_any()
        unused = [k for k in self.inputs if k not in fields]
        if unused:
            self.warnings.append(
                f"{ps}:{self._line('input') or 1}: input field(s) {', '.join(unused)} "
                "are declared but the template never uses them"
            )

    def _all_placeholders(self, body: str, ps: str) -> set[str]:
        """The fields of the template (of every message), each message checked on its own
        so that every broken one is reported with its line."""
        if self.chat is None:
            return self._placeholders(body, ps)
        problems = Problems(ps)
        fields: set[str] = set()
        for piece in self.chat.messages_pieces:
            with problems.collect():
                fields |= self._placeholders(piece.text, ps, piece.line)
        problems.raise_any()
        return fields

    def _placeholders(self, body: str, ps: str, first_line: int | None = None) -> set[str]:
        from .formats.handlebars import HandlebarsError

        first_line = self.body_line if first_line is None else first_line
        try:
            return self.chat.placeholders(body) if self.chat is not None \
                else tpl.placeholders(body)
        except (tpl.TemplateError, HandlebarsError) as e:
            hb = uses_handlebars(body) if self.format == "tracegrad" else None
            if hb is not None:
                raise PromptFileError(
                    f"the template uses Handlebars ('{hb[0]}'), but this is a tracegrad prompt "
                    "file, whose templates are Jinja2 ({{ x }}, {% if x %}...{% endif %}, "
                    "{% for x in xs %}...{% endfor %}); a Dotprompt file would have "
                    "'input: {schema: ...}' or 'output: {format: ...}' and no 'metric'",
                    ps, first_line + hb[1] - 1) from None
            line = first_line + (e.lineno - 1) if e.lineno else first_line
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
        if self.chat is not None:
            return self.chat.fields()
        return tpl.placeholders(self.body)

    @property
    def required_fields(self) -> set[str]:
        """The fields a dataset row must hold: those the file gives no default for."""
        return {f for f in self.fields if f not in self.defaults}

    @property
    def name(self) -> str:
        n = self.path.name
        return n[: -len(".prompt")] if n.endswith(".prompt") else self.path.stem

    @property
    def param_name(self) -> str:
        return _param_name(self.name)

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
        fields = sorted(self.required_fields)
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
        from .formats.handlebars import HandlebarsError

        try:
            if self.chat is not None:
                self.chat.render({k: v.value for k, v in self.field_variables(row, {}).items()})
            else:
                tpl.check(self.body, {f: row.get(f) for f in self.fields})
        except (tpl.TemplateError, HandlebarsError, KeyError) as e:
            line = self.body_line + (e.lineno - 1) if getattr(e, "lineno", None) else \
                self.body_line
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

        # with defaults, a row may or may not hold a field: every column is read
        fields = sorted(self.fields) if not self.defaults else None
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

    def piece_parameter(self, piece: Piece) -> Parameter:
        """The Parameter of one trainable message of a chat-shaped file."""
        assert self.chat is not None
        syntax = "Handlebars" if self.chat.syntax == "handlebars" else "Jinja2"
        role = f"the {piece.role or 'prompt'} message ({syntax} template) of the '{self.name}' " \
            "prompt"
        if self.description:
            role += f": {self.description.strip()}"
        constraints: list[Any] = list(self.constraints)
        kind = "template"
        if self.chat.syntax != "handlebars":
            from .formats.chat import NO_MARKER

            constraints.append(NO_MARKER)
        else:
            from .formats.dotprompt import HandlebarsRule

            kind = "text"  # the Jinja2 checks of "template" do not apply; the rule does
            constraints.append(HandlebarsRule.for_text(piece.text))
        return Parameter(piece.text, role=role, name=f"{self.param_name}_{piece.name}",
                         constraints=constraints, value_kind=kind)

    def to_module(self, engine: Any) -> Module:
        """A :class:`~tracegrad.Module` whose ``forward(**inputs)`` returns the output Variable."""
        if self.chat is not None:
            from .formats.chat import ChatProgram

            return ChatProgram(self, engine)
        return PromptProgram(self, engine)

    def field_variables(self, row: Mapping[str, Any] | None, inputs: Mapping[str, Any]
                        ) -> dict[str, Variable]:
        """The fields the template reads, from ``row`` and ``inputs`` (else the file's
        defaults), as Variables; extra fields such as the expected output are ignored."""
        data = {**self.defaults, **(row_dict(row) if row is not None else {}), **inputs}
        out: dict[str, Variable] = {}
        for name in sorted(self.fields):
            if name not in data:
                raise KeyError(f"missing input field '{name}'")
            value = data[name]
            if isinstance(value, Variable):
                out[name] = value
            else:
                role = self.inputs.get(name) or f"input field '{name}'"
                out[name] = Variable(value, role=role, name=name)
        return out

    def prompt_text(self, row: Mapping[str, Any]) -> str:
        """Everything the model is sent for ``row``, as one text (for token estimates)."""
        if self.chat is None:
            return tpl.render(self.body, {k: v for k, v in row.items() if k in self.fields})
        fields = {k: v.value for k, v in self.field_variables(row, {}).items()}
        return "\n".join(str(m.get("content", "")) for m in self.chat.render(fields))

    # -- writing ---------------------------------------------------------------------
    def trainable_values(self) -> dict[str, str]:
        """The trainable texts by the name the program's state uses for them."""
        if self.chat is None:
            return {"prompt": self.body}
        return {p.name: p.text for p in self.chat.trainable}

    def _values(self, new: str | Mapping[str, str]) -> dict[str, str]:
        if isinstance(new, Mapping):
            return {k: str(v) for k, v in new.items() if k in self.trainable_values()}
        names = list(self.trainable_values())
        if len(names) != 1:
            raise PromptFileError(f"this file has {len(names)} trainable messages "
                                  f"({', '.join(names)}): give a value for each", str(self.path))
        return {names[0]: new}

    def body_with(self, new: str | Mapping[str, str]) -> str:
        """The body (all text after the front matter) with ``new`` trainable text(s)."""
        return self.render_text(new)[len(self.prefix):]

    def render_text(self, new: str | Mapping[str, str],
                    demos: list[dict[str, str]] | None = None) -> str:
        """The file text with ``new`` as the trainable text(s) and every other byte kept
        (``demos``: the few-shot demos to write into the front matter's ``demos`` key)."""
        new = _scrubbed(new)
        values = self._values(new)
        if self.chat is None:
            new_body = values.get("prompt", self.body)
            if self.body.endswith("\n") and not new_body.endswith("\n"):
                nl = "\r\n" if self.body.endswith("\r\n") else "\n"
                new_body += nl
            return self._prefix_with(demos) + new_body
        text = self.text
        for piece in sorted(self.chat.trainable, key=lambda p: -p.start):
            if piece.name in values:
                value = values[piece.name].strip("\r\n")
                if "\r\n" in piece.text or "\r\n" in self.text[piece.end:piece.end + 2]:
                    value = re.sub(r"(?<!\r)\n", "\r\n", value)
                text = text[:piece.start] + value + text[piece.end:]
        return text

    def _prefix_with(self, demos: list[dict[str, str]] | None) -> str:
        """The front matter with its ``demos`` key rewritten (only those lines change)."""
        if demos is None or not self.demos_max or demos == self.demos:
            return self.prefix
        block = scrub_text(demos_yaml(self.demos_max, demos))  # model output: no secret
        return replace_key(self.prefix, self.key_lines, "demos", block)

    def check_body(self, new: str | Mapping[str, str]) -> None:
        """New trainable text must parse and read exactly the fields the old one read."""
        ps = str(self.path)
        values = self._values(new)
        if self.chat is not None:
            self._check_pieces(values)
            return
        new_body = values.get("prompt", self.body)
        try:
            new_fields = tpl.placeholders(new_body)
        except tpl.TemplateError as e:
            raise PromptFileError(f"the new template does not parse: {e}", ps) from None
        _same_fields(self.fields, new_fields, "the new template", ps)

    def _check_pieces(self, values: Mapping[str, str]) -> None:
        from .formats.chat import has_markers

        assert self.chat is not None
        ps = str(self.path)
        for piece in self.chat.trainable:
            value = values.get(piece.name, piece.text)
            what = f"the new {piece.name} message"
            if has_markers(value) and self.chat.syntax != "handlebars":
                raise PromptFileError(f"{what} holds a role marker line, which would split it "
                                      "into several messages", ps, piece.line)
            try:
                new_fields = self.chat.placeholders(value)
            except ValueError as e:
                raise PromptFileError(f"{what} does not parse: {e}", ps, piece.line) from None
            _same_fields(self.chat.placeholders(piece.text), new_fields, what, ps)

    def write(self, path: str | os.PathLike[str] | None, new: str | Mapping[str, str],
              demos: list[dict[str, str]] | None = None) -> Path:
        """Write the file with ``new`` trainable text(s) to ``path`` (default: this file),
        atomically.

        An existing file at ``path`` is kept as ``NAME.bak`` first (``x.prompt`` ->
        ``x.prompt.bak``). Writing elsewhere (``--out``) leaves this file untouched.
        Returns the path written.
        """
        new = _scrubbed(new)  # a model wrote it: no secret reaches the disk
        self.check_body(new)
        target = Path(path) if path is not None else self.path
        data = self.render_text(new, demos).encode("utf-8")
        if target.exists():
            old = target.read_bytes()
            if old != data:
                atomic_write(backup_path(target), old)
        atomic_write(target, data)
        return target


def _same_fields(old: set[str], new: set[str], what: str, ps: str) -> None:
    if new != old:
        lost, extra = sorted(old - new), sorted(new - old)
        parts = []
        if lost:
            parts.append(f"drops {', '.join(lost)}")
        if extra:
            parts.append(f"adds {', '.join(extra)}")
        raise PromptFileError(f"{what} {' and '.join(parts)}; its placeholders must stay "
                              "the same", ps)


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
        self.demos = None
        if promptfile.demos_max:
            from .core.demos import Demos

            self.demos = Demos(promptfile.demos, max_demos=promptfile.demos_max,
                               name=f"{_param_name(promptfile.name)}_demos")
        self.call = FormattedLLMCall(
            engine,
            self.prompt,
            system=promptfile.system,
            demos=self.demos,
            role=f"the model's reply (compared with the expected '{promptfile.output}')",
            name=_param_name(promptfile.name),
            **promptfile.params,
        )

    def task_description(self) -> str:
        """The prompt file's task as the optimizer is told it (see Optimizer.set_task)."""
        pf = self.promptfile
        lines = [pf.description.strip()] if pf.description.strip() else []
        lines.append(f"Inputs: {', '.join(pf.inputs)}. The reply is compared with the "
                     f"dataset's '{pf.output}' field.")
        return "\n".join(lines)

    def _fields(self, row: Mapping[str, Any] | None, inputs: dict[str, Any]
                ) -> dict[str, Variable]:
        return self.promptfile.field_variables(row, inputs)

    def rendered_messages(self, row: Mapping[str, Any] | None = None, /, **inputs: Any
                          ) -> list[dict[str, Any]]:
        """What the model is sent for ``row`` with the current template (no call): the
        "rendered prompt" of an eval export and of the run report."""
        return self.call.render_messages(**self._fields(row, inputs))

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


def _scrubbed(new: str | Mapping[str, str]) -> str | Mapping[str, str]:
    """Trainable text(s) from a model, with any secret replaced (see tracegrad.redaction)."""
    if isinstance(new, str):
        return scrub_text(new)
    return {k: scrub_text(v) for k, v in new.items()}
