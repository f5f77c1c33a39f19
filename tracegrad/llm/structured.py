"""Getting a validated pydantic object out of a model that may not cooperate.

Models wrap JSON in fences, add prose, rename keys or stop early. We extract the most
plausible JSON object, validate it, and if that fails ask exactly once more with the
validation error shown. After that the caller gets a typed error it can handle.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .base import Completion, Engine, Message, Request, StructuredOutputError

T = TypeVar("T", bound=BaseModel)

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.S)


def extract_json(text: str) -> Any:
    """Parse JSON from a reply that may hold fences or prose around it.

    Raises ValueError with a short reason when nothing parses.
    """
    if text is None:
        raise ValueError("empty reply")
    candidates: list[str] = [text.strip()]
    candidates += [m.strip() for m in _FENCE.findall(text)]
    spans = []
    for open_c, close_c in (("{", "}"), ("[", "]")):
        i, j = text.find(open_c), text.rfind(close_c)
        if 0 <= i < j:
            spans.append((i, text[i : j + 1]))
    # the outermost structure starts first: a list of objects is a list, not its first object
    candidates += [c for _, c in sorted(spans)]
    last_err = "no JSON object found"
    for c in candidates:
        if not c:
            continue
        try:
            return json.loads(c)
        except json.JSONDecodeError as e:
            last_err = f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}"
    raise ValueError(last_err)


def parse_as(text: str, model: type[T]) -> T:
    """Validate reply text as ``model``. Raises ValueError with a readable reason."""
    data = extract_json(text)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ValueError(_short_validation_error(e)) from None


def _short_validation_error(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "(root)"
        parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts)


def repair_messages(request: Request, bad_reply: str, error: str) -> list[dict[str, Any]]:
    schema = request.response_format.model_json_schema() if request.response_format else None
    note = (
        f"Your previous reply could not be used: {error}.\n"
        "Reply again with only the JSON object"
        + (f" matching this schema:\n{json.dumps(schema)}" if schema else ".")
    )
    return [
        *request.messages,
        {"role": "assistant", "content": bad_reply[:4000]},
        {"role": "user", "content": note},
    ]


def complete_structured(engine: Engine, request: Request, model: type[T]) -> tuple[T, Completion]:
    """Send ``request`` and return a validated ``model`` instance, repairing once."""
    req = request if request.response_format is model else _with_format(request, model)
    first = engine.complete(req)
    if isinstance(first.parsed, model):
        return first.parsed, first
    try:
        return parse_as(first.text, model), first
    except ValueError as e:
        error = str(e)
    second = engine.complete(req.with_messages(repair_messages(req, first.text, error)))
    if isinstance(second.parsed, model):
        return second.parsed, second
    try:
        return parse_as(second.text, model), second
    except ValueError as e:
        raise StructuredOutputError(
            f"model reply did not match {model.__name__} after one repair: {e}", raw=second.text
        ) from None


async def acomplete_structured(
    engine: Engine, request: Request, model: type[T]
) -> tuple[T, Completion]:
    req = request if request.response_format is model else _with_format(request, model)
    first = await engine.acomplete(req)
    if isinstance(first.parsed, model):
        return first.parsed, first
    try:
        return parse_as(first.text, model), first
    except ValueError as e:
        error = str(e)
    second = await engine.acomplete(req.with_messages(repair_messages(req, first.text, error)))
    if isinstance(second.parsed, model):
        return second.parsed, second
    try:
        return parse_as(second.text, model), second
    except ValueError as e:
        raise StructuredOutputError(
            f"model reply did not match {model.__name__} after one repair: {e}", raw=second.text
        ) from None


def _with_format(request: Request, model: type[BaseModel]) -> Request:
    from dataclasses import replace

    return replace(request, response_format=model)


def complete_json(engine: Engine, request: Request, validate: Any) -> tuple[Any, Completion, int]:
    """Send ``request`` and return ``validate(parsed_json)``, repairing once.

    ``validate`` raises ValueError with a reason the model can act on. Returns the
    validated value, the last completion and the number of calls made (1 or 2).
    Raises StructuredOutputError after a failed repair.
    """
    first = engine.complete(request)
    try:
        return validate(extract_json(first.text)), first, 1
    except ValueError as e:
        error = str(e)
    second = engine.complete(request.with_messages(repair_messages(request, first.text, error)))
    try:
        return validate(extract_json(second.text)), second, 2
    except ValueError as e:
        raise StructuredOutputError(
            f"reply unusable after one repair: {e}", raw=second.text
        ) from None


def schema_name(model: type[BaseModel]) -> str:
    """A name the json_schema response format accepts (letters, digits, _ and -)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", model.__name__)[:64] or "Response"


def schema_instruction(model: type[BaseModel]) -> str:
    """The text asking for JSON when the server cannot be told the schema natively."""
    return (
        "Reply with only a JSON object (no prose, no code fences) that matches this JSON "
        f"schema:\n{json.dumps(model.model_json_schema(), ensure_ascii=False)}"
    )


def append_schema(messages: list[Message], model: type[BaseModel]) -> list[Message]:
    """``messages`` with the schema instruction added to the last one (a copy)."""
    out = [dict(m) for m in messages]
    note = schema_instruction(model)
    if not out:
        return [{"role": "user", "content": note}]
    last = out[-1]
    content = last.get("content")
    if isinstance(content, list):
        last["content"] = [*content, {"type": "text", "text": note}]
    else:
        last["content"] = f"{content or ''}\n\n{note}"
    return out
