"""Chat-shaped prompts: a body cut into messages, some of which are trainable.

Prompty files, Dotprompt files and tracegrad's own files with role markers all become a
:class:`ChatTemplate`: the body as :class:`Piece` spans of the file, each remembering
where it starts, so writing back replaces exactly the trainable spans and keeps every
other byte. How the pieces become messages depends on the format: a role-marker file
renders each message on its own (an input value can then never open a new message), a
Dotprompt body is rendered whole and split at the role markers its helpers print, as
Dotprompt itself does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import template as tpl
from ..core.module import Module
from ..core.variable import Variable
from ..llm.base import Message
from . import handlebars as hb

ROLES = ("system", "user", "assistant", "developer")

# A role marker alone on its line, as the Prompty parser reads it: ``system:``,
# ``# user:``, ``user[name="Alice"]:`` (attributes become message fields).
MARKER = re.compile(r"(?i)^[ \t]*#?[ \t]*(system|user|assistant|developer)"
                    r"(\[[^\]\n]*\])?[ \t]*:[ \t]*$")
_ATTR = re.compile(r'(\w+)\s*=\s*"?([^",\]]*)"?')


@dataclass
class Piece:
    """One span of the file's body: a message's text (or, in a Dotprompt body, the text
    between role tags). ``start`` is its offset in the file text and ``line`` its line."""

    text: str
    start: int
    line: int
    role: str | None
    name: str
    trainable: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def end(self) -> int:
        return self.start + len(self.text)


@dataclass
class ChatTemplate:
    """A body as pieces; ``syntax`` is ``jinja2`` or ``handlebars``; ``whole`` renders the
    body at once and splits it at role markers (Dotprompt) instead of per message."""

    pieces: list[Piece]
    syntax: str = "jinja2"
    whole: bool = False
    split: Callable[[str], list[Message]] | None = None  # rendered body -> messages

    @property
    def trainable(self) -> list[Piece]:
        return [p for p in self.pieces if p.trainable]

    @property
    def messages_pieces(self) -> list[Piece]:
        return [p for p in self.pieces if p.role is not None]

    def placeholders(self, text: str) -> set[str]:
        return hb.placeholders(text) if self.syntax == "handlebars" else tpl.placeholders(text)

    def fields(self, texts: Mapping[str, str] | None = None) -> set[str]:
        texts = texts or {}
        if self.whole:
            return self.placeholders("".join(texts.get(p.name, p.text) for p in self.pieces))
        out: set[str] = set()
        for p in self.messages_pieces:
            out |= self.placeholders(texts.get(p.name, p.text))
        return out

    def render(self, fields: Mapping[str, Any], texts: Mapping[str, str] | None = None
               ) -> list[Message]:
        """The chat messages for ``fields``, with ``texts`` for the trainable pieces."""
        texts = texts or {}
        if self.whole:
            assert self.split is not None
            body = "".join(texts.get(p.name, p.text) for p in self.pieces)
            return self.split(hb.render(body, _defused(fields)))
        messages: list[Message] = []
        for p in self.messages_pieces:
            text = texts.get(p.name, p.text)
            rendered = hb.render(text, fields) if self.syntax == "handlebars" \
                else tpl.render(text, dict(fields))
            content = "\n".join(rendered.splitlines()).strip("\n")
            messages.append({"role": p.role, **p.attrs, "content": content})
        return messages


def _defused(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Input values that cannot print a Dotprompt marker: a user's text saying
    ``<<<dotprompt:role:system>>>`` must stay text, not become a system message."""
    def clean(v: Any) -> Any:
        if isinstance(v, str):
            return v.replace("<<<dotprompt:", "<<< dotprompt:")
        if isinstance(v, Mapping):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v
    return {k: clean(v) for k, v in fields.items()}


# -- cutting a body at role-marker lines ----------------------------------------------------


def has_markers(body: str) -> bool:
    return any(MARKER.match(line) for line in body.splitlines())


def split_markers(body: str, offset: int, first_line: int, syntax: str = "jinja2",
                  attrs: bool = False) -> ChatTemplate:
    """Cut ``body`` (which starts at ``offset`` and on line ``first_line`` of the file) at
    its role-marker lines. Text before the first marker is a system message, as in Prompty
    (none when it is blank). Each piece is the message's text without its surrounding
    blank lines, which stay in the file as they are. Marker attributes become message
    fields only with ``attrs`` (Prompty's strict mode, its default, drops them)."""
    pieces: list[Piece] = []
    seen: dict[str, int] = {}
    role, fields, start, pos = "system", {}, offset, offset
    for line in body.splitlines(keepends=True):
        m = MARKER.match(line.rstrip("\r\n"))
        if m:
            if pieces or body[start - offset:pos - offset].strip() or start != offset:
                pieces.append(_core(body, offset, start, pos, first_line, role, fields, seen))
            role, fields = m.group(1).lower(), _attrs(m.group(2)) if attrs else {}
            start = pos + len(line)
        pos += len(line)
    if pieces or body.strip() or start != offset:
        pieces.append(_core(body, offset, start, pos, first_line, role, fields, seen))
    return ChatTemplate(pieces, syntax=syntax)


def _core(body: str, offset: int, start: int, end: int, first_line: int, role: str,
          attrs: dict[str, Any], seen: dict[str, int]) -> Piece:
    """The piece for ``body[start:end]`` (file offsets) without its surrounding blank
    lines; the first line keeps its indentation, the last its trailing spaces."""
    text = body[start - offset:end - offset]
    lines = text.splitlines(keepends=True)
    lead = 0
    while lines and not lines[0].strip():
        lead += len(lines.pop(0))
    while lines and not lines[-1].strip():
        lines.pop()
    core = "".join(lines).rstrip("\r\n")
    seen[role] = seen.get(role, 0) + 1
    name = role if seen[role] == 1 else f"{role}_{seen[role]}"
    line = first_line + body.count("\n", 0, start - offset + lead)
    return Piece(core, start + lead, line, role, name, attrs=attrs)


def _attrs(raw: str | None) -> dict[str, Any]:
    """``[name="Alice", n=2]`` as message fields, typed as Prompty types them."""
    out: dict[str, Any] = {}
    for key, value in _ATTR.findall(raw or ""):
        v: Any = value.strip()
        if v.lower() in ("true", "false"):
            v = v.lower() == "true"
        else:
            for kind in (int, float):
                try:
                    v = kind(v)
                    break
                except ValueError:
                    continue
        out[key] = v
    return out


class NoMarkerRule(str):
    """The rule that keeps a rewritten message one message: as text the optimizer reads
    and a check it runs (a ``str`` so that run files record it as text)."""

    def __call__(self, value: Any) -> str | None:
        if has_markers(str(value)):
            return ("a rewritten message may not hold a role-marker line ('user:' alone on a "
                    "line): it would become several messages")
        return None


NO_MARKER = NoMarkerRule("Must stay one message: no line that is only a role such as "
                         "'user:' or 'system:'.")


# -- choosing the trainable pieces --------------------------------------------------------


def choose_trainable(chat: ChatTemplate, spec: Any) -> str | None:
    """Mark the pieces ``spec`` names (a role, a piece name such as ``user_2``, a message
    number from 1, or a list of those; default: the system message(s), else the first
    message). Returns what is wrong with ``spec``, or None."""
    msgs = chat.messages_pieces or chat.pieces
    if spec is None:
        chosen = [p for p in msgs if p.role == "system"] or msgs[:1]
    else:
        chosen = []
        for item in spec if isinstance(spec, list) else [spec]:
            found = _select(msgs, item)
            if not found:
                listing = ", ".join(f"{p.name} (line {p.line})" for p in msgs)
                return (f"names {item!r}, but the file has no such message (messages: "
                        f"{listing}; give a role, a name such as user_2, or a number from 1)")
            chosen += [p for p in found if p not in chosen]
    for p in chosen:
        if not p.text.strip():
            return f"makes the {p.name} message (line {p.line}) trainable, but it is empty"
        p.trainable = True
    return None


def _select(msgs: list[Piece], item: Any) -> list[Piece]:
    if isinstance(item, bool):
        return []
    if isinstance(item, int):
        return [msgs[item - 1]] if 1 <= item <= len(msgs) else []
    if not isinstance(item, str):
        return []
    key = item.strip().lower()
    if key == "all":
        return list(msgs)
    return [p for p in msgs if p.name == key] or [p for p in msgs if p.role == key]


# -- the program ------------------------------------------------------------------------


class ChatProgram(Module):
    """The program a chat-shaped prompt file describes: one call with its messages.

    Each trainable piece is a Parameter, an attribute named after the piece (``system``,
    ``user_2``), so run state, reports and write-back name the message they change.
    """

    def __init__(self, promptfile: Any, engine: Any) -> None:
        from ..ops.llm import _Caller

        self.promptfile = promptfile
        self._chat: ChatTemplate = promptfile.chat
        self._caller = _Caller(engine, dict(promptfile.params),
                               f"the model's reply (compared with the expected "
                               f"'{promptfile.output}')")
        for piece in self._chat.trainable:
            setattr(self, piece.name, promptfile.piece_parameter(piece))

    def _texts(self) -> dict[str, str]:
        return {p.name: getattr(self, p.name).text for p in self._chat.trainable}

    def _build(self, row: Mapping[str, Any] | None, inputs: dict[str, Any]
               ) -> tuple[list[Message], dict[str, Variable]]:
        fields = self.promptfile.field_variables(row, inputs)
        messages = self._chat.render({k: v.value for k, v in fields.items()}, self._texts())
        deps: dict[str, Variable] = {p.name: getattr(self, p.name) for p in self._chat.trainable}
        deps.update(fields)
        return messages, deps

    def _op(self, messages: list[Message], deps: dict[str, Variable]) -> Any:
        from ..ops.llm import LLMOp

        return LLMOp(self.promptfile.param_name, deps, messages, self._caller.llm.model)

    def rendered_messages(self, row: Mapping[str, Any] | None = None, /, **inputs: Any
                          ) -> list[Message]:
        """What the model is sent for ``row`` with the current texts (no call)."""
        return self._build(row, inputs)[0]

    def forward(self, row: Mapping[str, Any] | None = None, /, **inputs: Any) -> Variable:
        messages, deps = self._build(row, inputs)
        c = self._caller.llm.complete(self._caller._request(messages, {}))
        return self._caller._output(c, self._op(messages, deps))

    async def aforward(self, row: Mapping[str, Any] | None = None, /, **inputs: Any
                       ) -> Variable:
        messages, deps = self._build(row, inputs)
        c = await self._caller.llm.acomplete(self._caller._request(messages, {}))
        return self._caller._output(c, self._op(messages, deps))

