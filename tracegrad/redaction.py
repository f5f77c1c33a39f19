"""Secrets never leave the process: the one place that knows them and scrubs them out.

A key can come back from anywhere -- a proxy or a hostile model that echoes the
``Authorization`` header into its replies, a server error that quotes it, a user config
that names it -- and from a reply it would flow into candidates, the cache, the run
directory, the user's prompt file and the terminal. So every writer and printer of
tracegrad passes its text through :func:`scrub_text` (or :func:`scrub` for JSON-able
values), and :func:`secret_problem` makes a proposed parameter value that holds a secret
a constraint violation, so it is never applied.

What counts as a secret:

- the keys of the engines built in this process (:func:`remember` -- ``OpenAIEngine``
  registers its API key, the password of its base URL and secret-named header values),
  so a key passed as ``api_key=`` is known to writers that never saw the engine;
- the values of secret-named environment variables (``*KEY*``, ``*TOKEN*``, ...), and
  values under secret-named fields of a scrubbed config (``api_key``, ``password``, ...);
- anything shaped like a credential: ``sk-...`` keys, ``Bearer`` tokens, the value of an
  ``Authorization:`` header, GitHub / Slack / AWS key prefixes.

Only the process-wide set grows (a secret once seen stays one); nothing here is written
anywhere. Placeholders that local servers take instead of a key ("not-needed",
"sk-no-key-required": lowercase words) and strings under 6 characters are not secrets. This module imports nothing of tracegrad, so ``llm/``, ``train/``, ``optim/`` and
the CLI can all use it.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterable
from typing import Any

__all__ = [
    "REDACTED",
    "collect_secrets",
    "find_secret",
    "forget_all",
    "is_secret",
    "remember",
    "scrub",
    "scrub_text",
    "secret_problem",
]

REDACTED = "[REDACTED]"
MIN_SECRET = 6  # shorter strings are too likely to be ordinary words to be scrubbed
MIN_ENV_SECRET = 8
# a text cut short ("...[57 characters omitted]...") may keep only one end of a key
FRAGMENT = 10  # the shortest end of a secret that is still scrubbed
FRAGMENTED = 16  # secrets shorter than this are only scrubbed whole

_SECRET_ENV = re.compile(r"(?i)(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)")
_SECRET_FIELD = re.compile(
    r"(?i)(^|[_\-.])(api[_\-]?key|apikey|secret|password|passwd|authorization|credentials?|"
    r"(access|auth|api|bearer|session|refresh)[_\-]?token|private[_\-]?key)s?($|[_\-.])"
)
# a bearer token has a digit or punctuation in it: "Bearer authentication" is prose
_TOKEN = r"(?=[A-Za-z]*[0-9._~+/=\-])[A-Za-z0-9._~+/=\-]{8,}"
_SHAPES = [
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"),
    re.compile(r"(?i)\bbearer\s+" + _TOKEN),
    re.compile(r"\b(?:ghp|gho|github_pat|xox[abp]|AKIA)[A-Za-z0-9_\-]{12,}"),
]
# the value of an Authorization header, also inside JSON-escaped text (quotes as \")
_AUTH = re.compile(
    r"(?i)(\bauthorization\\?[\"']?\s*[:=]\s*\\?[\"']?)(?!(?:bearer\s+)?\[REDACTED\])"
    r"(?:bearer\s+)?[^\s\"',;})\\]{4,}"
)

# "not-needed", "sk-no-key-required", "lm-studio": what local servers take instead of a key;
# scrubbing them would only blank model names and URLs that happen to contain them
_PLACEHOLDER = re.compile(r"[a-z]+(?:[-_][a-z]+)*")

_known: set[str] = set()
_known_lock = threading.Lock()


# -- what is secret ---------------------------------------------------------------------


def is_secret(value: Any) -> bool:
    """Whether ``value`` can be a key: long enough, and not a placeholder of lowercase
    words ("not-needed") that a local server takes instead of one."""
    return (isinstance(value, str) and len(value) >= MIN_SECRET
            and not _PLACEHOLDER.fullmatch(value))


def remember(*values: str | None) -> None:
    """Treat ``values`` as secrets for the rest of the process (engines call this with
    their keys, so writers that never see the engine still scrub them)."""
    keep = {v for v in values if is_secret(v)}
    if keep:
        with _known_lock:
            _known.update(keep)


def forget_all() -> None:
    """Drop every remembered secret (for tests that check what is remembered)."""
    with _known_lock:
        _known.clear()


def _env_secrets() -> list[str]:
    """Values of secret-named variables; an existing absolute path (``GNOME_KEYRING_
    CONTROL=/run/user/1000/keyring``) is a location, not a secret, and stays readable."""
    found = []
    for name, value in os.environ.items():
        if not _SECRET_ENV.search(name) or len(value) < MIN_ENV_SECRET:
            continue
        if not is_secret(value) or (os.path.isabs(value) and os.path.exists(value)):
            continue
        found.append(value)
    return found


def _engine_secrets(engine: Any) -> list[str]:
    """The keys of an engine and of every engine it wraps (``.inner``)."""
    found: list[str] = []
    e, depth = engine, 0
    while e is not None and depth < 20:
        fn = getattr(e, "secret_values", None)
        if callable(fn):
            with contextlib.suppress(Exception):
                found.extend(s for s in fn() if isinstance(s, str))
        for attr in ("api_key", "_api_key"):  # a guess, unlike secret_values(): filtered
            v = getattr(e, attr, None)
            if is_secret(v):
                found.append(v)
        e, depth = getattr(e, "inner", None), depth + 1
    return found


def collect_secrets(*engines: Any) -> list[str]:
    """Every known secret: remembered ones, secret env values, the engines' own keys.

    Longest first, so that a secret containing another is removed whole.
    """
    with _known_lock:
        found = list(_known)
    found += _env_secrets()
    for engine in engines:
        found += _engine_secrets(engine)
    # an engine's own secret_values() are taken as given, placeholders or not
    return sorted({s for s in found if len(s) >= MIN_SECRET}, key=len, reverse=True)


def _secrets(secrets: Iterable[str | None] | None) -> list[str]:
    """``secrets`` plus every known one (``None``: the known ones only)."""
    known = collect_secrets()
    if secrets is None:
        return known
    extra = {s for s in secrets if isinstance(s, str) and len(s) >= 4}
    return sorted(extra.union(known), key=len, reverse=True)


# -- scrubbing --------------------------------------------------------------------------


def _fragment_spans(text: str, secret: str) -> list[tuple[int, int]]:
    """Where ``text`` holds the first or the last ``FRAGMENT``+ characters of ``secret``
    (what a truncation leaves of it), each span grown to all of the secret it matches."""
    spans = []
    head, tail = secret[:FRAGMENT], secret[-FRAGMENT:]
    i = text.find(tail)
    while i >= 0:
        j, k = i, len(secret) - FRAGMENT
        while j > 0 and k > 0 and text[j - 1] == secret[k - 1]:
            j, k = j - 1, k - 1
        spans.append((j, i + FRAGMENT))
        i = text.find(tail, i + FRAGMENT)
    i = text.find(head)
    while i >= 0:
        end, k = i + FRAGMENT, FRAGMENT
        while end < len(text) and k < len(secret) and text[end] == secret[k]:
            end, k = end + 1, k + 1
        spans.append((i, end))
        i = text.find(head, end)
    return spans


def _without_fragments(text: str, secret: str) -> str:
    spans = _fragment_spans(text, secret)
    for start, end in sorted(spans, reverse=True):  # from the end: earlier offsets hold
        if text[start:end] != REDACTED:
            text = text[:start] + REDACTED + text[end:]
    return text


def _scrub_with(text: str, secrets: list[str]) -> str:
    for s in secrets:  # every whole secret first: an end of one may occur inside another
        if s in text:
            text = text.replace(s, REDACTED)
    for s in secrets:
        if len(s) >= FRAGMENTED:
            text = _without_fragments(text, s)
    for pat in _SHAPES:
        text = pat.sub(REDACTED, text)
    return _AUTH.sub(lambda m: m.group(1) + REDACTED, text)


def scrub_text(text: str, secrets: Iterable[str | None] | None = None) -> str:
    """``text`` with every known secret, ``secrets`` and credential shape replaced by
    ``[REDACTED]``. Every file tracegrad writes and every line it prints goes through
    here (or :func:`scrub`)."""
    if not isinstance(text, str) or not text:
        return text
    return _scrub_with(text, _secrets(secrets))


def _field_secrets(value: Any, out: list[str], depth: int = 0) -> list[str]:
    """Strings under secret-named fields anywhere in ``value`` (a config's ``api_key``)."""
    if depth > 50:
        return out
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, str) and _SECRET_FIELD.search(str(k)):
                out.append(v)
            else:
                _field_secrets(v, out, depth + 1)
    elif isinstance(value, list | tuple):
        for v in value:
            _field_secrets(v, out, depth + 1)
    return out


def scrub(value: Any, secrets: Iterable[str | None] | None = None) -> Any:
    """A copy of a JSON-able value with every credential replaced by ``[REDACTED]``.

    A string under a secret-named field is replaced whole and remembered, so that its
    copies elsewhere (in this value or anything written later) are scrubbed too.
    """
    remember(*_field_secrets(value, []))
    known = _secrets(secrets)

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return _scrub_with(v, known)
        if isinstance(v, dict):
            return {k: REDACTED if isinstance(x, str) and x and _SECRET_FIELD.search(str(k))
                    else walk(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [walk(x) for x in v]
        return v

    return walk(value)


# -- checking -----------------------------------------------------------------------------


def find_secret(text: str, secrets: Iterable[str | None] | None = None, *,
                besides: str = "") -> str | None:
    """What kind of secret ``text`` holds ("an sk-... API key", ...), or None.

    A credential-shaped string that ``besides`` holds as well is not counted: a prompt that
    already spelled out ``Authorization: Basic <...>`` may keep doing so. A known secret
    always counts. Never the secret itself: the answer is meant for messages and logs.
    """
    if not isinstance(text, str) or not text:
        return None
    for s in _secrets(secrets):
        if s in text or (len(s) >= FRAGMENTED and _fragment_spans(text, s)):
            return "a key or token this process was given"
    shapes = (*zip(_SHAPES, ("an sk-... API key", "a bearer token", "an access token"),
                   strict=True), (_AUTH, "an Authorization header value"))
    for pat, what in shapes:
        if any(m.group(0) not in besides for m in pat.finditer(text)):
            return what
    return None


def secret_problem(value: Any, current: Any = None) -> str | None:
    """The constraint violation of a proposed parameter value that holds a secret, or None.

    A value is applied to the program, sent in every later request, written to the run
    directory and maybe to the user's prompt file: one holding a credential (a model that
    copied an echoed ``Authorization`` header into its rewrite) is rejected, never scrubbed
    into something the optimizer did not propose. ``current`` is the value it would
    replace (see :func:`find_secret`'s ``besides``).
    """
    text = value if isinstance(value, str) else repr(value)
    before = "" if current is None else current if isinstance(current, str) else repr(current)
    what = find_secret(text, besides=before)
    if what is None:
        return None
    return (f"the value holds a secret ({what}); a value must never contain an API key, "
            "token or password -- leave it out")
