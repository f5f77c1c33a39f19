"""Jinja2 templates rendered in the sandbox: user prompt files and LLM-rewritten templates
are untrusted, so attribute tricks like ``{{ x.__class__ }}`` must fail, not execute."""

from __future__ import annotations

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


_env = _Env(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


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


def placeholders(template: str) -> set[str]:
    """Names of the fields a template reads (``{{ question }}`` -> {"question"})."""
    try:
        tree = _env.parse(template)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"template syntax error: {e.message} (line {e.lineno})", e.lineno) from None
    bad = _unsafe_access(tree)
    if bad is not None:
        raise TemplateError(
            f"template rejected by the sandbox: access to the attribute(s) '{bad[0]}' is not "
            f"allowed (line {bad[1]})", bad[1])
    return set(meta.find_undeclared_variables(tree))


def check(template: str) -> None:
    placeholders(template)


def render(template: str, fields: dict[str, Any]) -> str:
    try:
        return _env.from_string(template).render(**fields)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"template syntax error: {e.message} (line {e.lineno})", e.lineno) from None
    except jinja2.UndefinedError as e:
        raise TemplateError(f"template uses a field that was not given: {e.message}") from None
    except SecurityError as e:
        raise TemplateError(f"template rejected by the sandbox: {e}") from None
    except Exception as e:  # noqa: BLE001 - the template is untrusted: 1/0, range(10**9), ...
        raise TemplateError(f"template failed while rendering: {type(e).__name__}: {e}") from None
