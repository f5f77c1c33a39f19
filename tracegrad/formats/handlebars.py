"""The Handlebars subset Dotprompt bodies use, parsed and rendered without ``eval``.

A Dotprompt body is untrusted text (and an optimizer rewrites it), so it is never handed
to a general template engine: this module knows exactly these constructs --
``{{path}}``, ``{{{path}}}``, comments, ``{{#if}}``/``{{#unless}}`` (with ``{{else}}`` and
``{{else if}}``), ``{{#each}}`` (``@index``, ``@first``, ``@last``, ``@key``,
``as |item i|``), ``{{#with}}``, ``{{#ifEquals}}``/``{{#unlessEquals}}``, and Dotprompt's
helpers ``{{role "x"}}`` (also as a block), ``{{json x}}``, ``{{media url=...}}``,
``{{history}}`` and ``{{section "x"}}`` -- and refuses anything else (partials,
subexpressions, unknown helpers) at parse time with the template line. Rendering follows
Handlebars (standalone block lines leave no blank line, ``~`` trims, values print as
JavaScript would, no HTML escaping as in Dotprompt) and is bounded in steps, depth,
output and time, like :mod:`tracegrad.template`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_DEPTH = 50
MAX_STEPS = 1_000_000
MAX_OUTPUT = 1_000_000
MAX_SECONDS = 2.0

ROLE_MARKER = "<<<dotprompt:role:{}>>>"
HISTORY_MARKER = "<<<dotprompt:history>>>"

_BLOCKS = frozenset({"if", "unless", "each", "with", "role", "ifEquals", "unlessEquals"})
_HELPERS = frozenset({"role", "json", "media", "history", "section"})
_CONTEXT_BLOCKS = frozenset({"each", "with"})


class HandlebarsError(ValueError):
    """A template outside the supported subset, or one that broke a render limit."""

    def __init__(self, message: str, lineno: int | None = None) -> None:
        super().__init__(message if lineno is None else f"{message} (line {lineno})")
        self.message = message
        self.lineno = lineno


# -- tokens ------------------------------------------------------------------------------


@dataclass
class _Tag:
    body: str
    line: int
    triple: bool = False
    strip_before: bool = False
    strip_after: bool = False


def _tag_end(source: str, start: int, line: int) -> tuple[int, int, bool]:
    """Where the tag opened at ``start`` ends: (body end, closer length, triple)."""
    if source.startswith("!--", start + 2) or source.startswith("~!--", start + 2):
        mark = source.find("--", source.index("!--", start) + 3)
        while mark >= 0:
            j = mark + 2 + (source.startswith("~", mark + 2))
            if source.startswith("}}", j):
                return j, 2, False
            mark = source.find("--", mark + 1)
        raise HandlebarsError("unclosed comment '{{!--'", line)
    triple = source.startswith("{{{", start) or source.startswith("{{~{", start)
    end = source.find("}}}" if triple else "}}", start + 2)
    if end < 0:
        raise HandlebarsError("unclosed tag '{{'", line)
    if triple and source[end - 1] == "~":
        return end, 3, True
    return end, 3 if triple else 2, triple


def _tokens(source: str) -> list[_Tag | str]:
    parts: list[_Tag | str] = []
    i = 0
    while i < len(source):
        start = source.find("{{", i)
        if start < 0:
            parts.append(source[i:])
            break
        if start > i and source[start - 1] == "\\":  # \{{ is the text {{
            parts.append(source[i:start - 1] + "{{")
            i = start + 2
            continue
        line = source.count("\n", 0, start) + 1
        if source.startswith("{{{{", start):
            raise HandlebarsError("raw blocks '{{{{' are not supported", line)
        end, closer, triple = _tag_end(source, start, line)
        body = source[start + 2:end]
        strip_before = body.startswith("~")
        body = body[1:] if strip_before else body
        if triple:
            body = body[1:]
        strip_after = body.endswith("~")
        body = body[:-1] if strip_after else body
        if start > i:
            parts.append(source[i:start])
        parts.append(_Tag(body.strip(), line, triple, strip_before, strip_after))
        i = end + closer
    return _standalone(_trim(parts))


def _trim(parts: list[_Tag | str]) -> list[_Tag | str]:
    for k, part in enumerate(parts):
        if not isinstance(part, _Tag):
            continue
        if part.strip_before and k and isinstance(parts[k - 1], str):
            parts[k - 1] = str(parts[k - 1]).rstrip()
        if part.strip_after and k + 1 < len(parts) and isinstance(parts[k + 1], str):
            parts[k + 1] = str(parts[k + 1]).lstrip()
    return parts


def _is_standalone_kind(body: str) -> bool:
    return body.startswith(("!", "#", "/", "^", ">")) or body == "else" or \
        body.startswith("else ")


def _starts_line(parts: list[_Tag | str], k: int) -> bool:
    for cursor in range(k - 1, -1, -1):
        part = parts[cursor]
        if not isinstance(part, str):
            return False
        nl = part.rfind("\n")
        if nl >= 0:
            return not part[nl + 1:].strip(" \t")
        if part.strip(" \t"):
            return False
    return True


def _line_end(parts: list[_Tag | str], k: int) -> int | None:
    """Characters of the line ending after tag ``k`` to drop, or None if text follows."""
    if k + 1 >= len(parts):
        return 0
    nxt = parts[k + 1]
    if not isinstance(nxt, str):
        return None
    m = re.match(r"[ \t]*(\r\n|\n|$)", nxt)
    return len(m.group(0)) if m else None


def _standalone(parts: list[_Tag | str]) -> list[_Tag | str]:
    """A block or comment tag alone on its line leaves no blank line (Handlebars' rule)."""
    planned = [(k, end) for k, p in enumerate(parts)
               if isinstance(p, _Tag) and _is_standalone_kind(p.body) and _starts_line(parts, k)
               and (end := _line_end(parts, k)) is not None]
    for k, end in planned:
        for cursor in range(k - 1, -1, -1):  # drop the indentation before the tag
            prev = parts[cursor]
            if not isinstance(prev, str):
                break
            nl = prev.rfind("\n")
            parts[cursor] = prev[:nl + 1] if nl >= 0 else ""
            if nl >= 0:
                break
        if end:
            parts[k + 1] = str(parts[k + 1])[end:]
    return parts


# -- the tree ----------------------------------------------------------------------------


@dataclass
class _Call:
    name: str
    args: list[str]
    hash: dict[str, str]
    params: list[str]
    line: int
    literal: bool = False


@dataclass
class _Var:
    call: _Call


@dataclass
class _Block:
    call: _Call
    body: list[Any]
    inverse: list[Any] = field(default_factory=list)


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|\S+')
_PATH = re.compile(r"^(?:@?(?:\.\./)*(?:this|\.|[A-Za-z_$][\w$-]*|\[[^\]]*\])"
                   r"(?:[./](?:[A-Za-z_$][\w$-]*|\[[^\]]*\]|this))*)$")


def _call(header: str, line: int) -> _Call:
    params: list[str] = []
    if " as |" in header:
        header, rest = header.split(" as |", 1)
        params = rest.rstrip().rstrip("|").split()
    if "(" in header:
        raise HandlebarsError("subexpressions '(...)' are not supported", line)
    bits = _TOKEN.findall(header.strip())
    if not bits:
        raise HandlebarsError("empty tag '{{}}'", line)
    hashed: dict[str, str] = {}
    positional: list[str] = []
    for bit in bits:
        if "=" in bit and bit[0] not in "\"'":
            key, value = bit.split("=", 1)
            _check_value(value, line)
            hashed[key] = value
        else:
            _check_value(bit, line)
            positional.append(bit)
    if not positional:
        raise HandlebarsError(f"tag '{{{{{header}}}}}' names nothing", line)
    name = positional[0]
    literal = name[0] in "\"'"
    return _Call(_unquote(name) if literal else name, positional[1:], hashed, params, line,
                 literal)


def _check_value(token: str, line: int) -> None:
    if not token:
        raise HandlebarsError("a '=' with no value", line)
    if token[0] in "\"'" or _number(token) is not None or token in ("true", "false", "null"):
        return
    if not _PATH.match(token):
        raise HandlebarsError(f"'{token}' is not a valid name or value", line)


def _unquote(token: str) -> str:
    return token[1:-1].replace("\\" + token[0], token[0])


def _number(token: str) -> int | float | None:
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    if re.fullmatch(r"-?\d+\.\d+", token):
        return float(token)
    return None


def parse(source: str) -> list[Any]:
    """The template as a tree; :class:`HandlebarsError` (with its line) outside the subset."""
    nodes, k, closer = _until(_tokens(source), 0, None, 0)
    if closer is not None:
        raise HandlebarsError(f"'{{{{/{closer.body[1:]}}}}}' closes no open block", closer.line)
    return nodes


def _until(parts: list[_Tag | str], k: int, stop: _Call | None, depth: int
           ) -> tuple[list[Any], int, _Tag | None]:
    """Nodes up to the tag that ends the block ``stop`` ({{/name}} or {{else}})."""
    if depth > MAX_DEPTH:
        raise HandlebarsError(f"blocks are nested more than {MAX_DEPTH} deep",
                              stop.line if stop else None)
    nodes: list[Any] = []
    while k < len(parts):
        part = parts[k]
        k += 1
        if isinstance(part, str):
            if part:
                nodes.append(part)
            continue
        body = part.body
        if body.startswith("!"):
            continue
        if body.startswith("/") or body == "else" or body.startswith("else "):
            if stop is None:
                what = "'{{else}}' outside a block" if body.startswith("else") else \
                    f"'{{{{{body}}}}}' closes no open block"
                raise HandlebarsError(what, part.line)
            return nodes, k, part
        if body.startswith((">", "^", "*", "#>", "#*")):
            raise HandlebarsError(f"'{{{{{body.split()[0]}' (partials, inverse sections, "
                                  "decorators) is not supported", part.line)
        if body.startswith("#"):
            block, k = _block(parts, k, _call(body[1:], part.line), depth)
            nodes.append(block)
            continue
        raw = body.startswith("&")
        call = _call(body[1:] if raw else body, part.line)
        if call.args or call.hash:
            if call.name not in _HELPERS:
                raise HandlebarsError(f"unknown helper '{call.name}' (supported: "
                                      f"{', '.join(sorted(_HELPERS))})", part.line)
        nodes.append(_Var(call))
    if stop is not None:
        raise HandlebarsError(f"'{{{{#{stop.name}}}}}' is never closed with "
                              f"'{{{{/{stop.name}}}}}'", stop.line)
    return nodes, k, None


def _block(parts: list[_Tag | str], k: int, call: _Call, depth: int) -> tuple[_Block, int]:
    if call.name not in _BLOCKS:
        raise HandlebarsError(f"unknown block helper '#{call.name}' (supported: "
                              f"{', '.join(sorted(_BLOCKS))})", call.line)
    need = 2 if call.name in ("ifEquals", "unlessEquals") else 1
    if len(call.args) != need:
        raise HandlebarsError(f"'{{{{#{call.name}}}}}' takes {need} argument(s)", call.line)
    block, k, end = _branches(parts, k, call, depth)
    if end.body[1:].strip() != call.name:
        raise HandlebarsError(f"'{{{{{end.body}}}}}' closes '{{{{#{call.name}}}}}' opened on "
                              f"line {call.line}", end.line)
    return block, k


def _branches(parts: list[_Tag | str], k: int, call: _Call, depth: int
              ) -> tuple[_Block, int, _Tag]:
    """A block's body and its {{else}} part, up to the closing tag (returned). In
    ``{{else if x}}...{{/if}}`` the rest of the chain is a nested block that shares it."""
    body, k, end = _until(parts, k, call, depth + 1)
    assert end is not None
    block = _Block(call, body)
    if not end.body.startswith("else"):
        return block, k, end
    rest = end.body[4:].strip()
    if rest:
        inner = _call(rest, end.line)
        if inner.name not in ("if", "unless") or len(inner.args) != 1:
            raise HandlebarsError("only '{{else if x}}' and '{{else unless x}}' may follow "
                                  "'{{else'", end.line)
        nested, k, end = _branches(parts, k, inner, depth + 1)
        block.inverse = [nested]
        return block, k, end
    block.inverse, k, end = _until(parts, k, call, depth + 1)
    assert end is not None
    if not end.body.startswith("/"):
        raise HandlebarsError("a second '{{else}}' in one block", end.line)
    return block, k, end


# -- rendering ---------------------------------------------------------------------------


class _Budget:
    def __init__(self, limit: int) -> None:
        self.steps = MAX_STEPS
        self.size = 0
        self.limit = limit
        self.deadline = time.monotonic() + MAX_SECONDS

    def spend(self, line: int | None = None) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise HandlebarsError(f"template does more than {MAX_STEPS} steps", line)
        if self.steps % 1024 == 0 and time.monotonic() > self.deadline:
            raise HandlebarsError(f"template took longer than {MAX_SECONDS:g} s to render", line)

    def add(self, text: str) -> str:
        self.size += len(text)
        if self.size > self.limit:
            raise HandlebarsError(f"template output is longer than {self.limit} characters")
        return text


@dataclass
class _Scope:
    contexts: list[Any]
    params: list[dict[str, Any]]
    data: list[dict[str, Any]]
    budget: _Budget

    def pushed(self, ctx: Any, params: dict[str, Any], data: dict[str, Any] | None = None
               ) -> _Scope:
        return _Scope([*self.contexts, ctx], [*self.params, params],
                      [*self.data, data] if data is not None else self.data, self.budget)


def render(source: str, fields: Mapping[str, Any]) -> str:
    """Render ``source`` with ``fields`` under the limits; Dotprompt markers stay in the text."""
    data_size = sum(len(v) if isinstance(v, str) else len(str(v)) for v in fields.values())
    budget = _Budget(MAX_OUTPUT + 2 * len(source) + 10 * data_size)
    scope = _Scope([dict(fields)], [{}], [{"root": dict(fields)}], budget)
    return _render(parse(source), scope)


def _render(nodes: list[Any], scope: _Scope) -> str:
    out: list[str] = []
    for node in nodes:
        scope.budget.spend()
        if isinstance(node, str):
            out.append(scope.budget.add(node))
        elif isinstance(node, _Var):
            out.append(scope.budget.add(_show_call(node.call, scope)))
        else:
            out.append(_render_block(node, scope))
    return "".join(out)


def _show_call(call: _Call, scope: _Scope) -> str:
    if call.literal and not call.args and not call.hash and call.name not in _HELPERS:
        return ""
    if call.name in _HELPERS and (call.args or call.hash or call.name == "history"
                                  or call.literal):
        return _helper(call, scope)
    return _js_text(_value(call.name, scope))


def _helper(call: _Call, scope: _Scope) -> str:
    args = [_value(a, scope) for a in call.args]
    hashed = {k: _value(v, scope) for k, v in call.hash.items()}
    if call.name == "role":
        return ROLE_MARKER.format(args[0]) if args else ""
    if call.name == "history":
        return HISTORY_MARKER
    if call.name == "section":
        return f"<<<dotprompt:section {args[0]}>>>" if args else ""
    if call.name == "media":
        url = hashed.get("url")
        if not url:
            return ""
        ctype = hashed.get("contentType")
        return f"<<<dotprompt:media:url {url} {ctype}>>>" if ctype else \
            f"<<<dotprompt:media:url {url}>>>"
    if not args:  # json
        return ""
    indent = hashed.get("indent") or 0
    try:
        indent = int(indent)
    except (TypeError, ValueError):
        indent = 0
    try:
        return json.dumps(args[0], indent=indent) if indent else \
            json.dumps(args[0], separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise HandlebarsError(f"'json' cannot show this value: {e}", call.line) from None


def _render_block(node: _Block, scope: _Scope) -> str:
    name, args = node.call.name, [_value(a, scope) for a in node.call.args]
    if name in ("if", "unless"):
        shown = _truthy(args[0], node.call, scope)
        return _render(node.body if shown == (name == "if") else node.inverse, scope)
    if name in ("ifEquals", "unlessEquals"):
        same = args[0] == args[1]
        return _render(node.body if same == (name == "ifEquals") else node.inverse, scope)
    if name == "role":
        return scope.budget.add(ROLE_MARKER.format(args[0])) + _render(node.body, scope)
    if name == "with":
        if _empty(args[0]):
            return _render(node.inverse, scope)
        return _render(node.body, scope.pushed(args[0], _bind(node.call.params, args[0], None)))
    return _each(node, args[0], scope)


def _each(node: _Block, items: Any, scope: _Scope) -> str:
    if isinstance(items, Mapping):
        pairs = list(items.items())
    elif isinstance(items, Sequence) and not isinstance(items, str | bytes):
        pairs = list(enumerate(items))
    else:
        pairs = []
    if not pairs:
        return _render(node.inverse, scope)
    out = []
    for i, (key, item) in enumerate(pairs):
        scope.budget.spend(node.call.line)
        frame = {**scope.data[-1], "key": key, "index": i, "first": i == 0,
                 "last": i == len(pairs) - 1}
        out.append(_render(node.body, scope.pushed(item, _bind(node.call.params, item, key),
                                                   frame)))
    return "".join(out)


def _bind(params: list[str], value: Any, key: Any) -> dict[str, Any]:
    bound = {params[0]: value} if params else {}
    if len(params) > 1:
        bound[params[1]] = key
    return bound


def _truthy(value: Any, call: _Call, scope: _Scope) -> bool:
    if isinstance(value, bool):
        return value
    include_zero = "includeZero" in call.hash and _value(call.hash["includeZero"], scope) is True
    if not include_zero and isinstance(value, int | float) and value == 0:
        return False
    return not _empty(value)


def _empty(value: Any) -> bool:
    if value is None or value is False or value == "":
        return True
    return isinstance(value, Sequence) and not isinstance(value, str | bytes) and not value


def _value(token: str, scope: _Scope) -> Any:
    if token[0] in "\"'":
        return _unquote(token)
    if token in ("true", "false"):
        return token == "true"
    if token == "null":
        return None
    number = _number(token)
    if number is not None:
        return number
    return _lookup(token, scope)


def _segments(path: str) -> list[str]:
    return [s[1:-1] if s.startswith("[") else s
            for s in re.findall(r"\.\.(?=/|$)|\[[^\]]*\]|[^./\[]+|(?<![^./])\.(?=$|/)", path)]


def _lookup(path: str, scope: _Scope) -> Any:
    if path.startswith("@"):
        current: Any = scope.data[-1]
        for seg in _segments(path[1:]):
            current = _step(current, seg)
        return current
    parts = _segments(path)
    contexts, params = scope.contexts, scope.params
    climbed = 0
    while parts and parts[0] == "..":
        parts, climbed = parts[1:], climbed + 1
    if climbed >= len(contexts):
        return None
    contexts, params = contexts[:len(contexts) - climbed], params[:len(params) - climbed]
    if not parts or parts[0] in (".", "this"):
        current = contexts[-1]
        parts = parts[1:]
    elif climbed == 0 and any(parts[0] in p for p in params):
        current = next(p[parts[0]] for p in reversed(params) if parts[0] in p)
        parts = parts[1:]
    else:
        current = contexts[-1]
    for seg in parts:
        if seg not in (".", "this"):
            current = _step(current, seg)
    return current


def _step(current: Any, seg: str) -> Any:
    if isinstance(current, Mapping):
        return current.get(seg)
    if isinstance(current, Sequence) and not isinstance(current, str | bytes) and seg.isdigit():
        i = int(seg)
        return current[i] if i < len(current) else None
    return None


def _js_text(value: Any) -> str:
    """A value as JavaScript would print it into the template, as Handlebars does."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Mapping):
        return "[object Object]"
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return ",".join(_js_text(v) for v in value)
    return str(value)


# -- what a template reads ---------------------------------------------------------------


def placeholders(source: str) -> set[str]:
    """The input fields a template reads from its root (``{{a.b}}`` -> ``a``); names read
    inside ``{{#each}}``/``{{#with}}`` belong to the item, unless they climb out (``../``)."""
    found: set[str] = set()
    _collect(parse(source), 0, [], found)
    return found


def _collect(nodes: list[Any], depth: int, params: list[str], found: set[str]) -> None:
    for node in nodes:
        if isinstance(node, _Var):
            if node.call.args or node.call.hash or node.call.literal:
                _collect_tokens([*node.call.args, *node.call.hash.values()], depth, params,
                                found)
            else:
                _collect_tokens([node.call.name], depth, params, found)
        elif isinstance(node, _Block):
            _collect_tokens([*node.call.args, *node.call.hash.values()], depth, params, found)
            inner = depth + (node.call.name in _CONTEXT_BLOCKS)
            _collect(node.body, inner, [*params, *node.call.params], found)
            _collect(node.inverse, depth, params, found)


def _collect_tokens(tokens: list[str], depth: int, params: list[str], found: set[str]) -> None:
    for token in tokens:
        if token[0] in "\"'" or _number(token) is not None or token in ("true", "false",
                                                                         "null"):
            continue
        if token.startswith("@root"):
            segs = _segments(token[1:])[1:]
            if segs:
                found.add(segs[0])
            continue
        if token.startswith("@"):
            continue
        segs = _segments(token)
        climbed = 0
        while segs and segs[0] == "..":
            segs, climbed = segs[1:], climbed + 1
        if not segs or segs[0] in (".", "this") or depth - climbed != 0:
            continue
        if climbed == 0 and segs[0] in params:
            continue
        found.add(segs[0])


def uses_handlebars(text: str) -> tuple[str, int] | None:
    """The first Handlebars-only construct in ``text`` and its line (for telling a Dotprompt
    body from a Jinja2 one), or None."""
    m = re.search(r"\{\{~?\s*(?:[#/^>!]|else\b|@|this\b|(?:role|json|media|section)"
                  r"(?=\s+[\"'\w@.]))|\{\{\{", text)
    if m is None:
        return None
    return m.group(0), text.count("\n", 0, m.start()) + 1
