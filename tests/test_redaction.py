"""tracegrad.redaction: which strings are secrets, how they are scrubbed, and when a value
holding one is a constraint violation."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tracegrad import redaction
from tracegrad.redaction import (
    REDACTED,
    collect_secrets,
    find_secret,
    remember,
    scrub,
    scrub_text,
    secret_problem,
)

KEY = "sk-unit-REDACTION-0123456789abcdef"


@pytest.fixture(autouse=True)
def _clean_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no remembered secret and no secret in the environment (the
    registry is process-wide; what other tests remembered must not make these pass)."""
    saved = set(redaction._known)
    redaction.forget_all()
    for name in list(os.environ):
        if redaction._SECRET_ENV.search(name):
            monkeypatch.delenv(name)
    yield
    redaction.forget_all()
    redaction.remember(*saved)


def test_a_remembered_key_is_scrubbed_by_writers_that_never_saw_its_engine() -> None:
    plain = "unit-REDACTION-0123456789abcdef"  # no sk- prefix: only known, not shaped
    assert scrub_text(f"plain {plain}") == f"plain {plain}"
    remember(plain)
    out = scrub_text(f"plain {plain} and {plain[3:]}")
    assert plain not in out and plain[3:] not in out and out.startswith(f"plain {REDACTED}")
    assert plain in collect_secrets()


def test_the_ends_of_a_cut_short_key_are_scrubbed_too() -> None:
    """shorten() keeps a text's head and tail: it can cut a key and leave one end."""
    remember(KEY)
    head = f"feedback: ... {KEY[:14]}…[57 characters omitted]…"
    tail = f"…[57 characters omitted]…{KEY[-13:]}) and more"
    assert scrub_text(head).endswith(f"{REDACTED}…[57 characters omitted]…")
    assert scrub_text(tail) == f"…[57 characters omitted]…{REDACTED}) and more"
    assert find_secret(tail) is not None


def test_keys_that_share_an_end_are_each_scrubbed_whole() -> None:
    a, b = "sk-first-SHARED-0123456789", "sk-second-SHARED-0123456789"
    remember(a, b)
    assert scrub_text(f"({a}) ({b})") == f"({REDACTED}) ({REDACTED})"


def test_env_values_of_secret_named_variables_but_not_paths_or_placeholders(
        monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-1234567890")
    monkeypatch.setenv("HARMLESS", "value-1234567890")
    monkeypatch.setenv("GNOME_KEYRING_CONTROL", str(tmp_path))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-no-key-required")  # llama.cpp's placeholder
    found = collect_secrets()
    assert "tok-1234567890" in found
    assert "value-1234567890" not in found and str(tmp_path) not in found
    assert "sk-no-key-required" not in found
    remember("not-needed", "ollama", "abc")  # placeholders and short strings: not secrets
    assert collect_secrets() == ["tok-1234567890"]
    assert scrub_text(f"model ollama at {tmp_path}") == f"model ollama at {tmp_path}"


@pytest.mark.parametrize("text", [
    "use sk-proj-ABCDEFGHIJKLMNOPQRST now",
    "Authorization: Bearer t0k3n.value",
    '{"headers": "{\\"Authorization\\": \\"abcdef-123\\"}"}',  # JSON inside JSON
    "token ghp_abcdefghijklmnopqrstuvwxyz",
    "bearer xyz.abc.def",
])
def test_credential_shapes_are_scrubbed_without_knowing_them(text: str) -> None:
    out = scrub_text(text)
    assert REDACTED in out, out
    assert find_secret(text) is not None


@pytest.mark.parametrize("text", [
    "task-specific instructions", "Use Bearer authentication for the API",
    "Reply with only the final number.", "see the Authorization section",
])
def test_prose_is_left_alone(text: str) -> None:
    assert scrub_text(text) == text and find_secret(text) is None


def test_an_authorization_value_keeps_the_text_around_it() -> None:
    remember(KEY)
    out = scrub_text(f"(called with Authorization: Bearer {KEY})")
    assert out == f"(called with Authorization: Bearer {REDACTED})"
    assert scrub_text(out) == out  # scrubbing twice changes nothing


def test_scrub_walks_json_and_remembers_secret_fields() -> None:
    data = {"api_key": "k3y-from-config-77", "nested": [{"password": "hunter2hunter2"}],
            "note": "copied: k3y-from-config-77", "max_tokens": 100,
            "prompt_tokens": "not a secret"}
    out = scrub(data)
    assert out["api_key"] == REDACTED and out["nested"][0]["password"] == REDACTED
    assert out["note"] == f"copied: {REDACTED}"
    assert out["max_tokens"] == 100 and out["prompt_tokens"] == "not a secret"
    assert data["api_key"] == "k3y-from-config-77"  # a copy
    # a secret seen in a config is one everywhere afterwards
    assert scrub_text("later: k3y-from-config-77") == f"later: {REDACTED}"


def test_a_value_holding_a_secret_is_a_constraint_problem() -> None:
    remember(KEY)
    problem = secret_problem(f"Answer the question.\nAuthorization: Bearer {KEY}\n{{{{ q }}}}")
    assert problem is not None and "secret" in problem and KEY not in problem
    assert secret_problem({"values": [KEY]}) is not None  # JSON values too
    assert secret_problem("Answer the question.\n{{ q }}") is None


def test_a_shape_the_current_value_already_holds_is_not_a_new_secret() -> None:
    """A prompt about HTTP that already shows a header may keep showing it; the known key
    is refused even so."""
    current = "Explain: Authorization: Basic dXNlcjpwYXNz means user:pass."
    assert secret_problem(current + " Be brief.", current) is None
    assert secret_problem(current + " Bearer abc123def456", current) is not None
    remember(KEY)
    assert secret_problem(f"{KEY} again", f"{KEY}") is not None
