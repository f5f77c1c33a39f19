"""Jinja2 templates rendered in the sandbox: user prompt files and LLM-rewritten templates
are untrusted, so attribute tricks like ``{{ x.__class__ }}`` must fail, not execute."""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Iterable, Iterator
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError


class TemplateError(ValueError):
    """A template that does not parse, refers to a missing field, or breaks the sandbox."""

    def __init__(self, message: str, lineno: int | None = None) -> None:
        super().__init__(message)
        self.lineno = lineno


MAX_RESULT = 1_000_000
"""Longest string or list a ``*`` in a template may build, and most digits a ``**`` may."""

MAX_STEPS = 1_000_000
"""Loop iterations plus calls one render may make: ``{% for i in range(10**5) %}{% for j in
range(10**5) %}`` would otherwise spin for hours with no output to notice."""

MAX_SECONDS = 2.0
"""Wall-clock limit of one render."""

MAX_OUTPUT = 1_000_000
"""Longest text one render may produce beyond twice its own source and ten times the size
of the fields it was given (the user's own text is never cut; text a template makes up from
nothing is)."""

_UNSAFE_METHODS = frozenset({
    "format", "format_map", "update", "append", "extend", "insert", "pop", "popitem", "remove",
    "clear", "setdefault", "add", "discard", "sort", "reverse", "mro"})
"""Methods the sandbox refuses at render time (mutation, str.format's attribute lookups):
found at parse time, a prompt file is refused with its line instead of failing mid-run."""


class _Budget:
    """Work left to one render; every loop iteration and call spends one step."""

    __slots__ = ("steps", "deadline", "output")

    def __init__(self, fields: dict[str, Any] | None = None, source: int = 0) -> None:
        self.steps = MAX_STEPS
        self.deadline = time.monotonic() + MAX_SECONDS
        data = sum(len(v) if isinstance(v, str) else len(str(v)) for v in (fields or {}).values())
        self.output = MAX_OUTPUT + 2 * source + 10 * data

    def spend(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise SecurityError(f"template does more than {MAX_STEPS} loop iterations and calls")
        if self.steps % 1024 == 0 and time.monotonic() > self.deadline:
            raise SecurityError(f"template took longer than {MAX_SECONDS:g} s to render")


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("tg_tpl_budget",
                                                                        default=None)


def _spend() -> None:
    b = _budget.get()
    if b is not None:
        b.spend()


def _counted(items: Iterable[Any]) -> Iterator[Any]:
    """Every ``{% for %}`` iterates through this, so nested loops are bounded by the budget."""
    for item in items:
        _spend()
        yield item


def _output_limit() -> int:
    b = _budget.get()
    return MAX_OUTPUT if b is None else b.output


def _bounded_join(value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    parts: list[str] = []
    size = 0
    for item in value:
        _spend()
        text = str(item if attribute is None else getattr(item, str(attribute), ""))
        size += len(text) + len(d)
        if size > _output_limit():
            raise SecurityError(f"'join' would build more than {_output_limit()} characters")
        parts.append(text)
    return str(d).join(parts)


def _bounded_replace(s: Any, old: Any, new: Any, count: int | None = None) -> str:
    s, old, new = str(s), str(old), str(new)
    n = s.count(old) if old else len(s) + 1
    if count is not None and count >= 0:
        n = min(n, count)
    if len(s) + n * max(len(new) - len(old), 0) > _output_limit():
        raise SecurityError(f"'replace' would build more than {_output_limit()} characters")
    return s.replace(old, new, -1 if count is None else count)


class _Env(ImmutableSandboxedEnvironment):
    # ``{{ x * 10**9 }}`` would build a gigabyte and ``{{ 9 ** 10**9 }}`` compute for hours:
    # an LLM-rewritten template must not be able to stall or exhaust the process.
    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int) \
                        and len(seq) * n > MAX_RESULT:
                    raise SecurityError(f"'*' would build {len(seq) * n} items (at most "
                                        f"{MAX_RESULT} are allowed)")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) \
                and abs(left) > 1 and right * max(abs(left), 2).bit_length() > 4 * MAX_RESULT:
            raise SecurityError("'**' result is too large")
        return super().call_binop(context, operator, left, right)

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _spend()  # bounds recursive macros and call-heavy templates
        return super().call(__context, __obj, *args, **kwargs)

    def _generate(self, source: nodes.Template, *args: Any, **kwargs: Any) -> str:
        for loop in source.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.Name("_tg_counted", "load"), [loop.iter], [], None,
                                   None, lineno=loop.lineno)
        return super()._generate(source, *args, **kwargs)


_env = _Env(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
_env.globals["_tg_counted"] = _counted
_env.filters["join"] = _bounded_join
_env.filters["replace"] = _bounded_replace


def _unsafe_access(tree: nodes.Template) -> tuple[str, int] | None:
    """``x._name`` / ``x["_name"]`` on the first line that has any: the sandbox would refuse
    it at render time; finding it at parse time lets a prompt file be refused with its line.
    Returns the names (innermost first) and the line."""
    found: list[tuple[int, str]] = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        name = node.attr if isinstance(node, nodes.Getattr) else (
            node.arg.value if isinstance(node.arg, nodes.Const) else None)
        if isinstance(name, str) and name.startswith("_"):
            found.append((node.lineno, name))
    if not found:
        return None
    line = min(n for n, _ in found)
    names = list(dict.fromkeys(name for n, name in reversed(found) if n == line))
    return "', '".join(names), line


def _const_int(node: nodes.Node) -> int | None:
    return node.value if isinstance(node, nodes.Const) and isinstance(node.value, int) else None


def _refused(tree: nodes.Template) -> tuple[str, int] | None:
    """The first construct the sandbox or the render limits would refuse, with its line:
    file inclusion, dangerous methods and attributes, recursion, constant blow-ups."""
    checks: list[tuple[int, str]] = []
    for node in tree.find_all((nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)):
        checks.append((node.lineno, f"'{{% {type(node).__name__.lower()} %}}' is not allowed "
                                    "(templates cannot load other files)"))
    for node in tree.find_all(nodes.Filter):
        if node.name == "attr":
            checks.append((node.lineno, "the 'attr' filter is not allowed"))
    for node in tree.find_all(nodes.Getattr):
        if node.attr in _UNSAFE_METHODS:
            checks.append((node.lineno, f"the method '.{node.attr}' is not allowed"))
    for node in tree.find_all(nodes.Mul):
        n = max((v for v in map(_const_int, (node.left, node.right)) if v is not None), default=0)
        if n > MAX_RESULT:
            checks.append((node.lineno, f"'*' by {n} is too large (at most {MAX_RESULT})"))
    for node in tree.find_all(nodes.Pow):
        base, exp = _const_int(node.left), _const_int(node.right)
        if exp is not None and exp > 4 * MAX_RESULT and (base is None or abs(base) > 1):
            checks.append((node.lineno, "'**' result is too large"))
    checks.extend(_recursive_macros(tree))
    checks.extend(_huge_loops(tree.body, 1))
    if not checks:
        return None
    line, message = min(checks)
    return message, line


def _recursive_macros(tree: nodes.Template) -> list[tuple[int, str]]:
    found = []
    for macro in tree.find_all(nodes.Macro):
        for call in macro.find_all(nodes.Call):
            if isinstance(call.node, nodes.Name) and call.node.name == macro.name:
                found.append((macro.lineno, f"macro '{macro.name}' calls itself"))
                break
    return found


def _range_size(node: nodes.Node) -> int:
    """Items of a ``range(...)`` with constant arguments; 1 for anything not known statically."""
    if not (isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name)
            and node.node.name == "range"):
        return 1
    nums = [_const_int(a) for a in node.args]
    if not nums or any(n is None for n in nums) or len(nums) > 3:
        return 1
    try:
        return len(range(*nums))  # type: ignore[arg-type]
    except (ValueError, OverflowError):
        return 1


def _huge_loops(body: Iterable[nodes.Node], outer: int) -> list[tuple[int, str]]:
    found = []
    for node in body:
        if not isinstance(node, nodes.For):
            found.extend(_huge_loops(node.iter_child_nodes(), outer))
            continue
        work = outer * _range_size(node.iter)
        if work > MAX_STEPS:
            found.append((node.lineno, f"nested loops would run {work} times "
                                       f"(at most {MAX_STEPS})"))
        else:
            found.extend(_huge_loops(node.body, work))
    return found


def placeholders(template: str) -> set[str]:
    """Names of the fields a template reads (``{{ question }}`` -> {"question"})."""
    return set(_placeholders(template))


@functools.lru_cache(maxsize=256)
def _placeholders(template: str) -> frozenset[str]:
    # Jinja's lexer is slow on long text and one template is read once per example: parse once
    try:
        tree = _env.parse(template)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"template syntax error: {e.message} (line {e.lineno})", e.lineno) from None
    bad = _unsafe_access(tree)
    if bad is not None:
        raise TemplateError(
            f"template rejected by the sandbox: access to the attribute(s) '{bad[0]}' is not "
            f"allowed (line {bad[1]})", bad[1])
    refused = _refused(tree)
    if refused is not None:
        raise TemplateError(f"template rejected by the sandbox: {refused[0]} (line {refused[1]})",
                            refused[1])
    return frozenset(meta.find_undeclared_variables(tree))


@functools.lru_cache(maxsize=64)
def _compiled(template: str) -> jinja2.Template:
    return _env.from_string(template)


def check(template: str, sample: dict[str, Any] | None = None) -> None:
    """Refuse a template before it is used: statically, and with ``sample`` (say a dataset's
    first row) by one trial render under the limits, which catches what only data reveals
    (``range(100000)|join(word * 100000)``)."""
    placeholders(template)
    if sample is not None:
        render(template, sample)


def _render_bounded(template: str, fields: dict[str, Any]) -> str:
    budget = _Budget(fields, len(template))
    token = _budget.set(budget)
    try:
        parts: list[str] = []
        size = 0
        for chunk in _compiled(template).generate(**fields):
            size += len(chunk)
            if size > budget.output:
                raise SecurityError(f"template output is longer than {budget.output} characters")
            parts.append(chunk)
        return "".join(parts)
    finally:
        _budget.reset(token)


def render(template: str, fields: dict[str, Any]) -> str:
    """Render under the sandbox and the limits above; any failure is a ``TemplateError``."""
    try:
        return _render_bounded(template, fields)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"template syntax error: {e.message} (line {e.lineno})", e.lineno) from None
    except jinja2.UndefinedError as e:
        raise TemplateError(f"template uses a field that was not given: {e.message}") from None
    except SecurityError as e:
        raise TemplateError(f"template rejected by the sandbox: {e}", _template_line(e)) from None
    except Exception as e:  # noqa: BLE001 - the template is untrusted: 1/0, range(10**9), ...
        raise TemplateError(f"template failed while rendering: {type(e).__name__}: {e}",
                            _template_line(e)) from None


def _template_line(error: BaseException) -> int | None:
    """The template line a render-time error came from: Jinja rewrites the traceback so the
    template's own frames carry its line numbers under the file name ``<template>``."""
    line, tb = None, error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
