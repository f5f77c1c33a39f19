"""tracegrad's pytest plugin: ``mock_llm``, ``fake_openai_server`` and ``llm_cassette``.

Registered automatically when tracegrad is installed (entry point ``pytest11``); disable it
with ``-p no:tracegrad_pytest``. ``pytest --tracegrad-record`` records the real LLM calls of
the tests that use ``llm_cassette`` into ``cassettes/<module>/<test>.jsonl`` beside each test
file; without it those tests replay offline and fail on any request not recorded.

The module sits outside the package on purpose: pytest imports every installed plugin at
start-up, in every project sharing the environment, and importing ``tracegrad`` takes a few
hundred milliseconds (pydantic, networkx). So this file imports only pytest, and a fixture
imports tracegrad the first time a test asks for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_CASSETTE = pytest.StashKey[Any]()
_CLEARED = pytest.StashKey[set]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tracegrad", "tracegrad LLM cassettes")
    group.addoption(
        "--tracegrad-record", action="store_true", dest="tracegrad_record", default=False,
        help="call the real models and (re)write the llm_cassette files of the tests run",
    )
    group.addoption(
        "--tracegrad-record-mode", choices=("all", "new"), default="all",
        dest="tracegrad_record_mode",
        help="with --tracegrad-record: 'all' rewrites each cassette (default), 'new' keeps "
             "recorded calls and records only the missing ones",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "tracegrad_cassette(path): llm_cassette file for this test, relative to the test "
        "file (default cassettes/<module>/<test>.jsonl)",
    )
    config.stash[_CLEARED] = set()


def pytest_report_header(config: pytest.Config) -> list[str]:
    if config.getoption("tracegrad_record", default=False):
        mode = config.getoption("tracegrad_record_mode", default="all")
        return [f"tracegrad: recording LLM cassettes (mode {mode}): real calls are made"]
    return []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Fail a test that made an unrecorded request, even if the pipeline caught the error."""
    try:
        result = yield
    except BaseException as exc:
        message = _misses(item, exc)
        if message is None:
            raise
        # from None: the test's own error is summarised in the message, not repeated
        raise pytest.fail.Exception(message, pytrace=False) from None
    message = _misses(item, None)
    if message is not None:
        pytest.fail(message, pytrace=False)
    return result


def _misses(item: pytest.Item, exc: BaseException | None) -> str | None:
    cassette = item.stash.get(_CASSETTE, None)
    return cassette.failure(exc) if cassette is not None else None


@pytest.fixture
def mock_llm() -> Any:
    """A scripted :class:`~tracegrad.testing.MockLLM` that records every request.

    Script it with ``mock_llm.add_replies("a", "b")`` (in order) and
    ``mock_llm.on(r"regex", "reply")``; inspect ``mock_llm.requests``, ``.texts()``,
    ``.calls_for("backward")``. An unscripted request raises, naming it.
    """
    from tracegrad.llm.mock import MockLLM

    return MockLLM(default=None)


@pytest.fixture
def fake_openai_server() -> Iterator[Any]:
    """A started :class:`~tracegrad.testing.FakeOpenAIServer` on 127.0.0.1; point
    ``tg.LLM(..., base_url=fake_openai_server.url)`` at it and script it with
    ``add_replies``/``inject``."""
    from tracegrad.testing.server import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def llm_cassette(request: pytest.FixtureRequest) -> Any:
    """Engines that replay this test's recorded LLM calls; ``--tracegrad-record`` records them.

    ``engine = llm_cassette("openai:gpt-4o-mini")``: the spec (or a factory, or an engine)
    is only used while recording, so replaying needs no key and no network.
    """
    from tracegrad.testing.cassette import Cassette, cassette_path

    marker = request.node.get_closest_marker("tracegrad_cassette")
    if marker is not None and marker.args:
        path = request.path.parent / Path(marker.args[0])
    else:
        path = cassette_path(request.path, request.node.name)
    config = request.config
    record = "off"
    if config.getoption("tracegrad_record", default=False):
        record = config.getoption("tracegrad_record_mode", default="all")
    cleared = config.stash.get(_CLEARED, None)
    cassette = Cassette(path, record, nodeid=request.node.nodeid, cleared=cleared)
    request.node.stash[_CASSETTE] = cassette
    return cassette
