"""Dotprompt files (``.prompt`` with a Handlebars body), read as Dotprompt defines them.

Front matter: ``model``, ``config`` (``temperature``, ``maxOutputTokens``, ``topP``,
``stopSequences``... sent as the OpenAI parameters), ``input.schema`` (Picoschema or JSON
Schema: the input fields and their descriptions), ``input.default`` (values a row may
leave out), ``output.format``/``output.schema`` (JSON output with a schema is scored with
``json_field_match`` unless ``tracegrad.metric`` says otherwise). The body is rendered by
the safe Handlebars subset (:mod:`.handlebars`) and split into messages at the role
markers its ``{{role "x"}}`` helpers print, as Dotprompt does; ``{{media url=...}}``
becomes an image part. The trainable spans are the texts between top-level role tags.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..frontmatter import _kind
from ..llm.base import Message
from . import handlebars as hb
from .chat import ChatTemplate, Piece, _core
from .foreign import Problems, tracegrad_section
from .prompty import _read, check_chat, read_task

CONFIG = {"temperature": "temperature", "maxOutputTokens": "max_tokens", "topP": "top_p",
          "stopSequences": "stop", "topK": None, "frequencyPenalty": "frequency_penalty",
          "presencePenalty": "presence_penalty", "seed": "seed", "version": None,
          "safetySettings": None, "candidateCount": None}

_ROLES = ("user", "model", "system", "tool", "assistant")
_WIRE_ROLE = {"model": "assistant"}
_MARKER = re.compile(r"(<<<dotprompt:(?:role:[a-z]+|history))>>>")
_MEDIA = re.compile(r"(<<<dotprompt:(?:media:url|section).*?)>>>")
_ROLE_TAG = re.compile(r"\{\{~?\s*(#?)role\s+(\"[^\"]*\"|'[^']*')\s*~?\}\}|\{\{~?\s*/role\s*~?\}\}")
_BLOCK_TAG = re.compile(r"\{\{!--.*?--\}\}|\{\{![^}]*\}\}|\{\{~?\s*([#/])\s*([\w]+)", re.S)


class HandlebarsRule(str):
    """A rule a rewritten Dotprompt message must follow, as text the optimizer reads and
    a check it runs (a ``str`` so that run files record it as text)."""

    fields: frozenset[str]

    @classmethod
    def for_text(cls, text: str) -> HandlebarsRule:
        fields = frozenset(hb.placeholders(text))
        shown = ", ".join("{{" + f + "}}" for f in sorted(fields)) or "no fields"
        rule = cls(f"Must stay Handlebars (Dotprompt) that reads exactly {shown} "
                   "(keep every one, add no other) and has no {{role}} tags.")
        rule.fields = fields
        return rule

    def __call__(self, value: Any) -> str | None:
        text = str(value)
        if _ROLE_TAG.search(text) or "<<<dotprompt:" in text:
            return "a rewritten message may not open another message ({{role}} tags)"
        try:
            got = hb.placeholders(text)
        except hb.HandlebarsError as e:
            return f"not valid Handlebars: {e}"
        if got != self.fields:
            lost, extra = sorted(self.fields - got), sorted(got - self.fields)
            return "the fields must stay the same" + (f"; drops {', '.join(lost)}" if lost
                                                      else "") + (
                f"; adds {', '.join(extra)}" if extra else "")
        return None


def parse_dotprompt(cls: Any, text: str, path: Path) -> Any:
    """A Dotprompt file as a chat-shaped ``PromptFile`` (``cls``); all problems together."""
    ps = str(path)
    split, data, key_lines, lines = _read(text, ps)
    problems = Problems(ps)
    pf = cls(path=path, text=text, prefix=split.prefix, body=split.body,
             body_line=split.body_line, inputs={}, output="expected", format="dotprompt",
             key_lines=key_lines)
    desc = data.get("description")
    pf.description = desc.strip() if isinstance(desc, str) else ""
    model = data.get("model")
    if isinstance(model, str) and model.strip():
        m = model.strip()
        pf.model = m if ":" in m else m.replace("/", ":", 1) if "/" in m else f"openai:{m}"
    elif model is not None:
        problems.add(f"'model' must be a model name, got {_kind(model)}", lines("model"))
    _config(pf, data, lines, problems)
    _input(pf, data, lines, problems)
    section = tracegrad_section(data, lines, problems)
    read_task(pf, section, lines, problems)
    _output(pf, data, section, lines, problems)
    with problems.collect():
        pf.chat = cut(split.body, len(split.prefix), split.body_line, ps)
    if pf.chat is not None:
        check_chat(pf, section, lines, problems)
    problems.raise_any()
    return pf


def _config(pf: Any, data: dict[str, Any], lines: Any, problems: Problems) -> None:
    from .foreign import sampling_params

    config = data.get("config")
    if config is None:
        return
    if not isinstance(config, dict):
        problems.add(f"'config' must be a mapping, got {_kind(config)}", lines("config"))
        return
    pf.params.update(sampling_params(config, CONFIG, lines, ("config",), problems))


def _input(pf: Any, data: dict[str, Any], lines: Any, problems: Problems) -> None:
    inp = data.get("input")
    if inp is None:
        return
    if not isinstance(inp, dict):
        problems.add(f"'input' must be a mapping (schema, default), got {_kind(inp)}",
                     lines("input"))
        return
    fields, optional = schema_fields(inp.get("schema"))
    pf.inputs.update(fields)
    pf.defaults.update(dict.fromkeys(optional))  # a row may leave an optional field out
    default = inp.get("default")
    if isinstance(default, dict):
        pf.defaults.update(default)
    elif default is not None:
        problems.add(f"'input.default' must be a mapping field -> value, got {_kind(default)}",
                     lines("input", "default"))


def _output(pf: Any, data: dict[str, Any], section: dict[str, Any], lines: Any,
            problems: Problems) -> None:
    out = data.get("output")
    if out is None:
        return
    if not isinstance(out, dict):
        problems.add(f"'output' must be a mapping (format, schema), got {_kind(out)}",
                     lines("output"))
        return
    if out.get("format") == "json" and out.get("schema") is not None and \
            "metric" not in section:
        pf.metric = "json_field_match"  # a JSON reply is scored field by field


def schema_fields(schema: Any) -> tuple[dict[str, str], set[str]]:
    """The fields of a Picoschema (``name?(type, description): ...``) or JSON Schema,
    with their descriptions, and which of them are optional."""
    if not isinstance(schema, dict):
        return {}, set()
    if isinstance(schema.get("type"), str) and isinstance(schema.get("properties"), dict):
        props = schema["properties"]
        required = set(schema.get("required") or [])
        return ({str(k): str(v.get("description", "")) if isinstance(v, dict) else ""
                 for k, v in props.items()}, {str(k) for k in props if k not in required})
    out: dict[str, str] = {}
    optional: set[str] = set()
    for key, value in schema.items():
        m = re.match(r"^([^?(]+)\??\s*(?:\(([^)]*)\))?$", str(key).strip())
        if not m or m.group(1).strip() == "*":
            continue
        desc = ""
        if m.group(2) and "," in m.group(2):
            desc = m.group(2).split(",", 1)[1].strip()
        elif isinstance(value, str) and "," in value:
            desc = value.split(",", 1)[1].strip()
        out[m.group(1).strip()] = desc
        if "?" in str(key):
            optional.add(m.group(1).strip())
    return out, optional


# -- the body -----------------------------------------------------------------------------


def cut(body: str, offset: int, first_line: int, ps: str) -> ChatTemplate:
    """The body as pieces: the texts between top-level role tags are messages (trainable
    candidates), the tags and surrounding blank lines stay as they are. Dotprompt renders
    the body stripped, so the body's own leading and trailing whitespace is left out."""
    core_start = len(body) - len(body.lstrip())
    core = body.strip()
    try:
        hb.parse(core)
    except hb.HandlebarsError as e:
        from ..frontmatter import PromptFileError

        line = first_line + body.count("\n", 0, core_start) + (e.lineno or 1) - 1
        raise PromptFileError(e.message, ps, line) from None
    pieces: list[Piece] = []
    seen: dict[str, int] = {}
    role, pos = "user", 0
    for m in _top_level_role_tags(core):
        _message(pieces, core, offset + core_start, pos, m.start(), first_line, role, seen)
        pieces.append(_plain(core, offset + core_start, m.start(), m.end(), first_line))
        role = _unquote(m.group(2)) if m.group(2) else role  # {{/role}} keeps the role
        pos = m.end()
    _message(pieces, core, offset + core_start, pos, len(core), first_line, role, seen)
    fix = first_line + body.count("\n", 0, core_start)
    for p in pieces:
        p.line = fix + core.count("\n", 0, p.start - offset - core_start)
    return ChatTemplate(pieces, syntax="handlebars", whole=True,
                        split=lambda rendered: to_wire(to_messages(rendered)))


def _top_level_role_tags(core: str) -> list[re.Match[str]]:
    """Role tags outside every other block: ``{{role "x"}}``, ``{{#role "x"}}`` and its
    ``{{/role}}`` (a tag inside ``{{#if}}`` cannot cut the body into fixed spans)."""
    events = sorted([(m.start(), 1, m) for m in _BLOCK_TAG.finditer(core)] +
                    [(m.start(), 0, m) for m in _ROLE_TAG.finditer(core)],
                    key=lambda e: (e[0], e[1]))
    depth, found = 0, []
    for _, is_block, m in events:
        if not is_block:
            if depth == 0:
                found.append(m)
        elif m.group(2) and m.group(2) != "role":
            depth += 1 if m.group(1) == "#" else -1
    return found


def _unquote(token: str) -> str:
    return token[1:-1]


def _plain(core: str, base: int, start: int, end: int, first_line: int) -> Piece:
    return Piece(core[start:end], base + start, first_line, None, "")


def _message(pieces: list[Piece], core: str, base: int, start: int, end: int,
             first_line: int, role: str, seen: dict[str, int]) -> None:
    """The span ``core[start:end]`` as blank lead, the message text, blank tail."""
    text = core[start:end]
    if not text:
        return
    piece = _core(core, base, base + start, base + end, first_line, role, {}, seen)
    if not piece.text.strip():  # only whitespace: no message, nothing to train
        seen[role] -= 1
        pieces.append(Piece(text, base + start, first_line, None, ""))
        return
    lead = piece.start - (base + start)
    if lead:
        pieces.append(Piece(text[:lead], base + start, first_line, None, ""))
    pieces.append(piece)
    if piece.end < base + end:
        pieces.append(Piece(core[piece.end - base:end], piece.end, first_line, None, ""))


# -- rendered text -> messages --------------------------------------------------------------


def to_messages(rendered: str) -> list[dict[str, Any]]:
    """Dotprompt's messages (``{"role", "content": [{"text"} | {"media"}]}``) from the
    rendered body, as Dotprompt's ``to_messages`` builds them (no history is given)."""
    sources: list[dict[str, Any]] = [{"role": "user", "source": ""}]
    for piece in (p for p in _MARKER.split(rendered) if p.strip()):
        if piece.startswith("<<<dotprompt:role:"):
            role = piece[len("<<<dotprompt:role:"):]
            if sources[-1]["source"].strip():
                sources.append({"role": role, "source": ""})
            else:
                sources[-1]["role"] = role
        elif piece.startswith("<<<dotprompt:history"):
            sources.append({"role": "model", "source": ""})
        else:
            sources[-1]["source"] += piece
    return [{"role": s["role"], "content": _parts(s["source"])} for s in sources if s["source"]]


def _parts(source: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for piece in (p for p in _MEDIA.split(source) if p.strip()):
        if piece.startswith("<<<dotprompt:media:url"):
            fields = piece.split(" ")
            media = {"url": fields[1]} if len(fields) > 1 else {"url": ""}
            if len(fields) > 2 and fields[2].strip():
                media["contentType"] = fields[2]
            parts.append({"media": media})
        elif piece.startswith("<<<dotprompt:section"):
            parts.append({"metadata": {"purpose": piece.split(" ", 1)[-1]}, "pending": True})
        else:
            parts.append({"text": piece})
    return parts


def to_wire(messages: list[dict[str, Any]]) -> list[Message]:
    """Dotprompt messages as OpenAI chat messages: ``model`` is ``assistant``, media
    are image parts, and text-only content is one string."""
    wire: list[Message] = []
    for m in messages:
        role = m["role"] if m["role"] in _ROLES else "user"
        parts = [p for p in m["content"] if "text" in p or "media" in p]
        if all("text" in p for p in parts):
            content: Any = "".join(p["text"] for p in parts)
        else:
            content = [{"type": "text", "text": p["text"]} if "text" in p else
                       {"type": "image_url", "image_url": {"url": p["media"]["url"]}}
                       for p in parts]
        wire.append({"role": _WIRE_ROLE.get(role, role), "content": content})
    return wire
