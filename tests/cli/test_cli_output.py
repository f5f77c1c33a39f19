"""What the CLI prints goes through tracegrad.redaction: results on stdout, logs and the
one-line errors on stderr (issue 12: a diff, an output or an error may quote the key)."""

from __future__ import annotations

import json

import pytest
import typer

from tracegrad.cli._shared import _fail, _log, _out, _out_json
from tracegrad.redaction import remember

KEY = "sk-cli-output-ECHO-0123456789"


def test_stdout_stderr_and_errors_are_scrubbed(capsys: pytest.CaptureFixture[str]) -> None:
    remember(KEY)
    _out(f"+ Authorization: Bearer {KEY}")
    _out_json({"output": f"echo {KEY}", "api_key": "abc-123-not-known-yet", "n": 3})
    _log(f"[yellow]note:[/yellow] server said {KEY}")
    assert isinstance(_fail(f"HTTP 401: Incorrect API key provided: {KEY}", 1), typer.Exit)
    out, err = capsys.readouterr()
    assert KEY not in out + err
    lines = out.splitlines()
    assert lines[0] == "+ Authorization: Bearer [REDACTED]"
    assert json.loads(lines[1]) == {"output": "echo [REDACTED]", "api_key": "[REDACTED]", "n": 3}
    assert "note: server said [REDACTED]" in err and "error: HTTP 401" in err
