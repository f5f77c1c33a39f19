"""Automatic constraints: the rules a new value must follow that we can check ourselves.

An optimizer's reply is untrusted input. Before a value replaces a parameter it is
turned into the parameter's kind (a number from its digits, JSON from its text, code
without markdown fences) and checked against what the program relies on: a template
keeps its fields, code keeps its function and signature, a typed value validates as
its type. Each check also has a sentence shown to the model up front, so most replies
are right the first time and a failing one can be repaired with a precise reason.

User constraints are sentences for the model; a callable constraint is also checked
here (it returns ``True``/``None`` when the value is fine, ``False`` or a message
when it is not, or raises with a message). A value that holds a secret (an API key the
model copied from an echoed header) always violates a constraint: it would be sent and
written everywhere (:func:`tracegrad.redaction.secret_problem`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter, ValidationError

from .. import template as tpl
from ..core.variable import Parameter
from ..prompts.kinds import KIND_RULES
from ..redaction import secret_problem
from .code import ALLOWED_IMPORTS, defined_functions, strip_fences, validate_code

Constraint = str | Callable[[Any], Any]

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")

# what each kind is, as shown beside a parameter (the wording lives in prompts/kinds.py)
KIND_HINTS = {kind: rule.what for kind, rule in KIND_RULES.items()}


@lru_cache(maxsize=64)
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def type_adapter(tp: Any) -> TypeAdapter[Any]:
    try:
        return _adapter(tp)
    except TypeError:  # unhashable type expression
        return TypeAdapter(tp)


def _schema_text(tp: Any, limit: int = 300) -> str:
    try:
        text = json.dumps(type_adapter(tp).json_schema(), separators=(",", ":"))
    except Exception:  # noqa: BLE001 - a schema is a hint; its absence is not an error
        return getattr(tp, "__name__", str(tp))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _validation_message(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc + ': ' if loc else ''}{err.get('msg')}")
    return "; ".join(parts)


def _function_name(param: Parameter) -> str | None:
    name = getattr(param, "function_name", None)
    if name:
        return str(name)
    names = defined_functions(param.text)
    return names[0] if names else None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "null" if value is None else type(value).__name__


def constraint_text(c: Constraint) -> str:
    if isinstance(c, str):
        return c
    doc = (getattr(c, "__doc__", None) or "").strip().splitlines()
    return doc[0] if doc else f"must pass the check {getattr(c, '__name__', repr(c))}"


def describe(param: Parameter, extra: Iterable[Constraint] = ()) -> list[str]:
    """Every constraint on ``param``, as sentences for the optimizer's request."""
    out = [constraint_text(c) for c in (*extra, *param.constraints)]
    kind = param.value_kind
    if kind == "template":
        try:
            fields = sorted(tpl.placeholders(param.text))
        except tpl.TemplateError:
            fields = []
        if fields:
            shown = ", ".join("{{ " + f + " }}" for f in fields)
            out.append(
                f"Must stay a valid Jinja2 template that uses exactly the fields {shown}: "
                "keep every one of them and add no other field."
            )
        else:
            out.append("Must stay a valid Jinja2 template; it uses no fields, add none.")
    elif kind == "number":
        out.append("Must be a single number, with no words or units.")
    elif kind == "json":
        out.append(f"Must be valid JSON; its top level stays a JSON {_json_type(param.value)}.")
    elif kind == "demos":
        out.append(
            f"Must be a JSON list of at most {getattr(param, 'max_demos', '?')} objects, each "
            '{"input": "...", "output": "..."}: keep demos that show what the step must get '
            "right, drop or replace ones that mislead; never invent an output the step "
            "should not give.")
    elif kind == "code":
        fn = _function_name(param)
        sig = getattr(param, "signature", None)
        if fn:
            out.append(
                f"Must be valid Python that defines `def {fn}{sig or '(...)'}` at top level "
                "with the same parameter names, order and optional parameters."
            )
        out.append(
            f"May import only these modules: {', '.join(sorted(ALLOWED_IMPORTS))}. "
            "No eval, exec, open or __import__; no file, network or process access."
        )
    else:
        out.append("Must not be empty.")
    if param.value_type is not None and kind != "demos":  # said above in words
        out.append(f"Must validate as this type (JSON schema): {_schema_text(param.value_type)}")
    return out


def _as_number(raw: Any) -> tuple[Any, str | None]:
    if isinstance(raw, bool):
        return None, "expected a number, got a boolean"
    if isinstance(raw, int | float):
        value = raw
    else:
        text = strip_fences(str(raw)).strip().strip("`").strip()
        try:
            value = json.loads(text)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError
        except ValueError:
            found = _NUMBER.findall(text)
            if len(found) != 1:
                what = "no number" if not found else f"{len(found)} numbers"
                return None, f"expected a single number, found {what} in {text[:80]!r}"
            value = int(found[0]) if re.fullmatch(r"[-+]?\d+", found[0]) else float(found[0])
    if isinstance(value, float) and not math.isfinite(value):
        return None, f"expected a finite number, got {value}"
    return value, None


def _as_json(raw: Any) -> tuple[Any, str | None]:
    if not isinstance(raw, str):
        return raw, None
    text = strip_fences(raw).strip()
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        return None, f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"


def _keep_trailing_newline(old: Any, new: str) -> str:
    if isinstance(old, str) and old.endswith("\n") and not new.endswith("\n"):
        return new + "\n"
    return new


def check(param: Parameter, raw: Any, extra: Iterable[Constraint] = ()) -> tuple[Any, list[str]]:
    """Turn a proposed ``raw`` value into ``param``'s kind and list what is wrong with it.

    Returns ``(value, problems)``; the value may be applied only when ``problems`` is
    empty. An empty value is reported as the single problem ``"empty value"``.
    """
    kind = param.value_kind
    old = param.value
    problems: list[str] = []
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return raw, ["empty value"]

    value: Any
    if kind == "number":
        value, err = _as_number(raw)
        if err:
            return None, [err]
        if isinstance(old, int) and not isinstance(old, bool) and isinstance(value, float) \
                and value.is_integer() and param.value_type is None:
            value = int(value)
    elif kind in ("json", "demos"):
        value, err = _as_json(raw)
        if err:
            return None, [err]
        if param.value_type is None and _json_type(value) != _json_type(old):
            problems.append(
                f"the top level must stay a JSON {_json_type(old)}, got a {_json_type(value)}"
            )
    else:
        value = raw if isinstance(raw, str) else (
            json.dumps(raw, ensure_ascii=False) if isinstance(raw, dict | list) else str(raw)
        )
        if kind == "code":
            value = strip_fences(value)
        value = _keep_trailing_newline(old, value)
        if not value.strip():
            return value, ["empty value"]
        if kind == "template":
            problems += _template_problems(param.text, value)
        elif kind == "code":
            problems += validate_code(
                value,
                function_name=_function_name(param),
                signature=getattr(param, "signature", None),
                reference=param.text,
            )

    if param.value_type is not None and not problems:
        try:
            validated = type_adapter(param.value_type).validate_python(value)
            value = type_adapter(param.value_type).dump_python(validated, mode="json")
        except ValidationError as e:
            problems.append(f"does not validate as the required type: {_validation_message(e)}")

    for c in (*extra, *param.constraints):
        if callable(c):
            problems += _run_check(c, value)
    leak = secret_problem(value, old)  # e.g. a rewrite that copied an echoed API key
    if leak is not None:
        problems.append(leak)
    return value, problems


def _template_problems(old: str, new: str) -> list[str]:
    try:
        new_fields = tpl.placeholders(new)
    except tpl.TemplateError as e:
        return [f"the template does not parse: {e}"]
    try:
        old_fields = tpl.placeholders(old)
    except tpl.TemplateError:
        return []  # the current value is already broken; accept any parseable template
    problems = []
    lost = sorted(old_fields - new_fields)
    added = sorted(new_fields - old_fields)
    if lost:
        problems.append(
            "the template dropped the field(s) " + ", ".join("{{ " + f + " }}" for f in lost)
            + "; every field of the current template must stay"
        )
    if added:
        problems.append(
            "the template uses field(s) that are not provided: "
            + ", ".join("{{ " + f + " }}" for f in added)
            + (f" (available: {', '.join(sorted(old_fields))})" if old_fields else "")
        )
    return problems


def _run_check(c: Callable[[Any], Any], value: Any) -> list[str]:
    try:
        ok = c(value)
    except Exception as e:  # noqa: BLE001 - a user check reports problems by raising
        return [f"{constraint_text(c)}: {e}"]
    if ok is None or ok is True:
        return []
    if isinstance(ok, str):
        return [ok] if ok.strip() else []
    return [] if ok else [f"violates: {constraint_text(c)}"]


__all__ = ["KIND_HINTS", "Constraint", "check", "constraint_text", "describe"]
