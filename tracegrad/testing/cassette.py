"""Cassette: one test's recorded LLM calls, behind the pytest ``llm_cassette`` fixture.

A test that talks to a real model is slow, costs money and needs a key, so it cannot run
in CI; a test against a mock proves only what the mock was told. A cassette is the middle
way: ``pytest --tracegrad-record`` runs the test once against the real model and keeps
every reply beside the test file; every later run replays them offline and fails, naming
the request, the moment the pipeline asks something it did not ask when recorded.

This module holds the logic; ``tracegrad_pytest`` (the plugin) only wires it to pytest,
so the plugin itself imports nothing heavy when pytest starts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from ..llm.base import ConfigurationError, Engine
from ..llm.meter import Meter
from .mock import request_text
from .replay import CassetteMiss, ReplayLLM

__all__ = ["Cassette", "CassetteMiss", "cassette_path"]

RecordMode = Literal["off", "all", "new"]
EngineSource = str | Engine | Callable[[], Engine]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def cassette_path(test_file: str | Path, test_name: str) -> Path:
    """``tests/test_qa.py`` + ``test_answer[x]`` -> ``tests/cassettes/test_qa/test_answer-x.jsonl``.

    Beside the test, one file per test, so a re-recorded test shows up as one diff.
    """
    test_file = Path(test_file)
    stem = _UNSAFE.sub("-", test_name).strip("-.") or "test"
    return test_file.parent / "cassettes" / test_file.stem / f"{stem}.jsonl"


class Cassette:
    """Engines for one test: recording real calls, or replaying them with no network.

    ``cassette("openai:gpt-4o-mini")`` returns a metered engine. The argument is only used
    when recording, so it may be a model spec (built with :func:`tracegrad.LLM`, cache
    off), a zero-argument factory, or an engine; in replay mode no engine is built, so
    no key is needed. Call it once per model the test uses; the engines share the file.
    """

    def __init__(self, path: Path, record: RecordMode = "off", *, nodeid: str = "",
                 cleared: set[Path] | None = None) -> None:
        if record not in ("off", "all", "new"):
            raise ValueError(f"record must be 'off', 'all' or 'new', not {record!r}")
        self.path = Path(path)
        self.record = record
        self.nodeid = nodeid
        self.engines: list[ReplayLLM] = []
        # files already started afresh in this session: tests sharing a cassette (a marker)
        # must not erase each other's recordings
        self._cleared = cleared if cleared is not None else set()

    @property
    def recording(self) -> bool:
        return self.record != "off"

    @property
    def hint(self) -> str:
        target = f" {self.nodeid}" if self.nodeid else ""
        return (
            "the pipeline asks something it did not ask when the cassette was recorded; "
            f"re-record with: pytest --tracegrad-record{target}"
        )

    @property
    def misses(self) -> list[CassetteMiss]:
        """Every request that had no recorded reply, even ones the pipeline caught."""
        return [m for e in self.engines for m in e.misses]

    def __call__(self, engine: EngineSource, *, name: str | None = None) -> Meter:
        """A metered engine for ``engine``; ``name`` tells engines apart in the file
        (default: the model spec, or the engine's model)."""
        ns = name or _name_of(engine)
        if any(e.namespace == ns for e in self.engines):
            raise ValueError(f"cassette {self.path} already has an engine named {ns!r}; "
                             "pass name=... to tell them apart")
        if self.recording:
            self._clear_once()
            inner = _build(engine)
            mode = "record" if self.record == "all" else "auto"
            replay = ReplayLLM(inner, self.path, mode, namespace=ns, append=True, hint=self.hint)
        else:
            if not self.path.exists():
                raise CassetteMiss(
                    f"no cassette at {self.path}: this test has not been recorded yet. "
                    f"Record it once with real credentials: pytest --tracegrad-record "
                    f"{self.nodeid}".rstrip(),
                    path=self.path,
                )
            replay = ReplayLLM(cassette=self.path, mode="replay", namespace=ns, hint=self.hint)
        self.engines.append(replay)
        return Meter(replay)

    def _clear_once(self) -> None:
        """``--tracegrad-record`` (all) starts a cassette afresh, once per session."""
        key = self.path.resolve()
        if self.record == "all" and key not in self._cleared and self.path.exists():
            self.path.unlink()
        self._cleared.add(key)

    def failure(self, error: BaseException | None = None) -> str | None:
        """The message a test fails with when it made unrecorded requests, else None.

        ``error`` is what the test then raised, if anything: often a consequence of the
        miss (a score of 0), so it is named after the miss that explains it."""
        misses = self.misses
        if not misses:
            return None
        lines = [f"{len(misses)} LLM request(s) not in cassette {self.path}:"]
        for m in misses[:5]:
            r, to = m.request, f" to {m.namespace}" if m.namespace else ""
            lines.append(f"  - {r.purpose} call{to}: {request_text(r)[:200]!r}" if r else f"  - {m}")
        if len(misses) > 5:
            lines.append(f"  ... and {len(misses) - 5} more")
        if error is not None and not isinstance(error, CassetteMiss):
            text = " ".join(str(error).split())
            text = text if len(text) <= 160 else text[:157] + "..."
            lines.append(f"and the test then failed with {type(error).__name__}: {text}")
        lines.append(self.hint)
        return "\n".join(lines)


def _name_of(engine: EngineSource) -> str:
    if isinstance(engine, str):
        return engine.strip()
    model = getattr(engine, "model", None)
    if isinstance(model, str) and model:
        return model
    name = getattr(engine, "__name__", "")
    return name if name and name != "<lambda>" else "default"


def _build(engine: EngineSource) -> Engine:
    if isinstance(engine, str):
        from ..llm.factory import LLM

        # no cache: a recording must hold what the model says now, not an old cached reply
        return LLM(engine, cache=False).inner
    if callable(engine) and not hasattr(engine, "complete"):
        built = engine()
        if not hasattr(built, "complete"):
            raise ConfigurationError(f"the engine factory returned {built!r}, not an engine")
        return built
    return engine  # type: ignore[return-value]
