"""Tools from plain Python functions: name, description and JSON schema from the signature.

A model decides when and how to call a tool from its description, so the description is a
:class:`~tracegrad.Parameter`: feedback reaches it through the agent's LLM steps and an
optimizer can rewrite it together with the system prompt. The argument schema comes from
type hints (through pydantic) and per-argument text from the docstring's ``Args:`` section
(or ``:param x:`` lines); arguments the model sends are validated against it before the
function runs, so a bad call is reported back to the model instead of crashing.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from ..core.variable import Parameter

_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Returns|Raises|Examples?)\s*:\s*$")
_GOOGLE_ARG = re.compile(r"^\s+(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_SPHINX_ARG = re.compile(r"^\s*:param\s+(?:[\w\[\], ]+\s+)?(\w+)\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The summary (text before any section) and per-argument descriptions of ``doc``."""
    lines = inspect.cleandoc(doc or "").splitlines()
    summary: list[str] = []
    args: dict[str, str] = {}
    section = ""
    last = ""
    for line in lines:
        m = _SECTION.match(line)
        if m:
            section = m.group(1).lower()
            continue
        sphinx = _SPHINX_ARG.match(line)
        if sphinx:
            last = sphinx.group(1)
            args[last] = sphinx.group(2).strip()
        elif section in ("args", "arguments", "parameters"):
            g = _GOOGLE_ARG.match(line)
            if g:
                last = g.group(1).lstrip("*")
                args[last] = g.group(2).strip()
            elif last and line.strip():
                args[last] = f"{args[last]} {line.strip()}".strip()
        elif not section and not line.lstrip().startswith(":"):
            summary.append(line)
    return "\n".join(summary).strip(), args


def _arguments_model(fn: Callable[..., Any], name: str, docs: dict[str, str]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    hints = _hints(fn)
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"tool {name}: *args/**kwargs cannot be described to a model; "
                            "name every argument")
        annotation = hints.get(p.name, Any)
        default = ... if p.default is p.empty else p.default
        fields[p.name] = (annotation, Field(default, description=docs.get(p.name)))
    model_name = re.sub(r"\W", "_", f"{name}_arguments")
    return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        import typing

        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable forward refs: no type is still a schema
        return {}


def _without_titles(schema: Any) -> Any:
    """pydantic's schema minus its generated ``title`` keys (noise to a model)."""
    if isinstance(schema, dict):
        return {k: _without_titles(v) for k, v in schema.items()
                if not (k == "title" and isinstance(v, str))}
    if isinstance(schema, list):
        return [_without_titles(v) for v in schema]
    return schema


class ToolArgumentsError(ValueError):
    """The model's arguments for a tool were not valid JSON or did not match its schema."""


class Tool:
    """A Python function the model may call. ``Tool(fn)`` or ``@tg.tool``.

    ``description`` defaults to the docstring's summary; it is a trainable Parameter
    (``trainable=False`` freezes it). Calling the tool object calls the function.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | Parameter | None = None,
        trainable: bool = True,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"a tool must be a function, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "tool")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.name):
            raise ValueError(f"tool name {self.name!r} must be 1-64 letters, digits, _ or -; "
                             "pass name=...")
        summary, docs = parse_docstring(getattr(fn, "__doc__", None))
        if isinstance(description, Parameter):
            self.description = description
        else:
            self.description = Parameter(
                description or summary or f"The function {self.name}.",
                role=f"description of the tool {self.name}: the model reads it to decide "
                     "when to call the tool and with which arguments",
                name=f"{self.name}.description",
                requires_grad=trainable,
                value_kind="text",
            )
        self.arguments = _arguments_model(fn, self.name, docs)
        self.schema = _without_titles(self.arguments.model_json_schema())
        self.is_async = inspect.iscoroutinefunction(fn)

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def parameters(self) -> list[Parameter]:
        return [self.description] if self.description.requires_grad else []

    def spec(self) -> dict[str, Any]:
        """The tool in the Chat Completions ``tools`` format, with today's description."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description.text, "parameters": self.schema}}

    def bind(self, arguments: str) -> dict[str, Any]:
        """The keyword arguments in the model's JSON ``arguments``, validated."""
        try:
            data = json.loads(arguments or "{}")
        except json.JSONDecodeError as e:
            raise ToolArgumentsError(f"arguments are not valid JSON ({e.msg})") from None
        if not isinstance(data, dict):
            raise ToolArgumentsError("arguments must be a JSON object")
        try:
            model = self.arguments.model_validate(data)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in err['loc']) or '(root)'}: {err['msg']}"
                for err in e.errors()[:5])
            raise ToolArgumentsError(f"arguments do not match the schema: {problems}") from None
        return {k: getattr(model, k) for k in type(model).model_fields}


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    trainable: bool = True,
) -> Any:
    """Decorator: ``@tg.tool`` or ``@tg.tool(name=..., description=..., trainable=False)``."""

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool(f, name=name, description=description, trainable=trainable)

    return wrap(fn) if fn is not None else wrap


def as_tools(items: Iterable[Tool | Callable[..., Any]]) -> list[Tool]:
    """Tools from tools or plain functions; two tools may not share a name."""
    out = [t if isinstance(t, Tool) else Tool(t) for t in items]
    names = [t.name for t in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"two tools are named {', '.join(dup)}; give one a name=")
    return out


__all__ = ["Tool", "ToolArgumentsError", "as_tools", "parse_docstring", "tool"]
