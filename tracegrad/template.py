"""Jinja2 templates rendered in the sandbox: user prompt files and LLM-rewritten templates
are untrusted, so attribute tricks like ``{{ x.__class__ }}`` must fail, not execute."""

from __future__ import annotations

from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError


class TemplateError(ValueError):
    """A template that does not parse, refers to a missing field, or breaks the sandbox."""

    def __init__(self, message: str, lineno: int | None = None) -> None:
        super().__init__(message)
        self.lineno = lineno


_env = ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
)


def placeholders(template: str) -> set[str]:
    """Names of the fields a template reads (``{{ question }}`` -> {"question"})."""
    try:
        return set(meta.find_undeclared_variables(_env.parse(template)))
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"template syntax error: {e.message} (line {e.lineno})", e.lineno) from None


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
