"""Fixtures for the CLI tests: an isolated environment, the ready prompt files copied to a
temporary directory, and a FakeOpenAIServer whose replies come from the demo's scripted
counting world (it answers forward, backward and optimizer requests differently, and only
gets better when the prompt holds the instructions the optimizer derives from feedback)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tracegrad.cli import app
from tracegrad.demo import CountingWorld
from tracegrad.testing import FakeOpenAIServer

REPO = Path(__file__).resolve().parents[2]
PROMPTS = REPO / "prompts"
SECRET = "sk-test-CLI-SECRET-0123456789"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TRACEGRAD_NO_CACHE", "TRACEGRAD_PRICING",
                 "TRACEGRAD_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRACEGRAD_CACHE_DIR", str(tmp_path / "cache-dir"))
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
def world_server() -> Iterator[FakeOpenAIServer]:
    world = CountingWorld()
    with FakeOpenAIServer(world.http_reply) as server:
        yield server


@pytest.fixture
def counting(tmp_path: Path) -> dict[str, Path]:
    """prompts/object_counting.* copied to tmp_path/work, so tests can change them."""
    work = tmp_path / "work"
    work.mkdir()
    out = {}
    for kind, name in (("prompt", "object_counting.prompt"),
                       ("train", "object_counting.train.jsonl"),
                       ("val", "object_counting.val.jsonl")):
        shutil.copyfile(PROMPTS / name, work / name)
        out[kind] = work / name
    return out


class Run:
    def __init__(self, result: Any) -> None:
        self.code = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr
        self.exception = result.exception

    def __repr__(self) -> str:
        return f"<exit {self.code}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}>"


def cli(*args: Any, env: dict[str, str] | None = None) -> Run:
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    run = Run(result)
    # an expected failure is reported, never raised: no traceback reaches the user
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"the CLI raised {result.exception!r}\n{run!r}") from result.exception
    return run
