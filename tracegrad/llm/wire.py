"""What an OpenAI-compatible exchange carries, read and checked without the SDK: safe URLs
for messages, the credentials an engine sends (to keep them out of everything written),
Retry-After headers, timeouts and the reply-token limit of a request."""

from __future__ import annotations

import email.utils
import math
import re
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..redaction import is_secret
from .base import ConfigurationError

LIMIT_NAMES = ("max_tokens", "max_completion_tokens")


def display_url(url: str) -> str:
    """The URL without any user:password part, safe for messages."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        parts = parts._replace(netloc=host)
    return urlunsplit(parts)


def credentials(key: str | None, url: str | None,
                 headers: dict[str, str] | None) -> list[str]:
    """Everything this engine sends that authenticates it: the key, the password of the
    base URL, secret-named header values ("api-key", "X-Auth-Token", ...). Each is
    registered with :mod:`tracegrad.redaction`, so no writer of the process lets it out."""
    found = [key] if key else []
    try:
        password = urlsplit(url).password if url else None
    except ValueError:  # a malformed URL is reported where it is used
        password = None
    if password:
        found.append(password)
    for name, value in (headers or {}).items():
        if isinstance(value, str) and re.search(r"(?i)key|token|secret|auth", str(name)):
            found.append(value.split(" ", 1)[1] if value.lower().startswith("bearer ")
                         else value)
    return [v for v in found if is_secret(v)]  # not "not-needed": a placeholder, not a key


def retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        return max(0.0, when.timestamp() - time.time())
    return None


def checked_timeout(value: Any) -> float | None:
    """``value`` as seconds (None: no bound); a ConfigurationError before anything is sent."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < math.inf:
        return float(value)
    raise ConfigurationError(f"timeout must be a number of seconds > 0, got {value!r}")


def wire_body(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of a chat request built as SDK keyword arguments: the fields the SDK
    does not know (``extra_body``) inlined, the client-side ``timeout`` left out."""
    body = {k: v for k, v in kwargs.items() if k not in ("timeout", "extra_body")}
    body.update(kwargs.get("extra_body") or {})
    return body


def sent_limit(kwargs: dict[str, Any]) -> int | None:
    """The reply-token limit in the request as it went out."""
    body = wire_body(kwargs)
    for name in LIMIT_NAMES:
        if body.get(name) is not None:
            return int(body[name])
    return None
