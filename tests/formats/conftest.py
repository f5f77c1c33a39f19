"""Fixtures for the format tests: the example files copied to a temporary folder (tests
change them), and an environment without the user's keys."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent / "examples"


@pytest.fixture
def examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SUPPORT_MODEL", "TRACEGRAD_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRACEGRAD_CACHE_DIR", str(tmp_path / "cache-dir"))
    work = tmp_path / "examples"
    shutil.copytree(EXAMPLES, work)
    return work
