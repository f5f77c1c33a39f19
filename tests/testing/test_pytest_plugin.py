"""The pytest plugin, run the way users run it: pytest inside pytest (``pytester``).

The user test is the one in the README ("Testing your pipeline with pytest"), read from
there, so the documented example is the tested one. It is recorded against the fake
server standing in for OpenAI, then replayed with the server gone and no key.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from tracegrad.testing import FakeOpenAIServer

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
# the inner sessions load the plugin by name, installed (entry point) or not
PLUGIN = ("-p", "tracegrad_pytest")
REPLIES = {r"two apples and a pear": "3", r"banana, a kiwi": "4", r".": "1"}


def readme_user_test() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Testing your pipeline with pytest", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TRACEGRAD_NO_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRACEGRAD_CACHE_DIR", str(tmp_path / "cache"))
    return monkeypatch


def record(pytester: pytest.Pytester, offline: pytest.MonkeyPatch, *args: str):
    """``pytest --tracegrad-record`` with the fake server as "OpenAI"; returns (result, server)."""
    with FakeOpenAIServer(REPLIES, model="gpt-4o-mini") as server:
        offline.setenv("OPENAI_BASE_URL", server.url)
        offline.setenv("OPENAI_API_KEY", "sk-test-recording-key-123456")
        result = pytester.runpytest(*PLUGIN, "--tracegrad-record", *args)
        offline.delenv("OPENAI_BASE_URL")
        offline.delenv("OPENAI_API_KEY")
    return result, server


def test_readme_user_test_passes_offline_from_its_cassette(pytester, offline):
    pytester.makepyfile(test_fruit_counter=readme_user_test())
    result, server = record(pytester, offline)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["tracegrad: recording LLM cassettes*"])
    cassette = pytester.path / "cassettes" / "test_fruit_counter" / "test_counter_is_accurate.jsonl"
    assert len(cassette.read_text().splitlines()) == 2
    assert "sk-test-recording" not in cassette.read_text()
    recorded = server.request_count

    # server stopped, no key, no base URL: only the cassette can answer
    result = pytester.runpytest(*PLUGIN)
    result.assert_outcomes(passed=3)
    assert server.request_count == recorded
    assert "recording" not in result.stdout.str()


def test_unrecorded_request_fails_clearly(pytester, offline):
    pytester.makepyfile(test_fruit_counter=readme_user_test())
    record(pytester, offline)[0].assert_outcomes(passed=3)
    pytester.makepyfile(test_fruit_counter=readme_user_test().replace(
        "Reply with the number only.", "Reply with one number."))
    result = pytester.runpytest(*PLUGIN, "-k", "accurate")
    result.assert_outcomes(failed=1, deselected=2)
    out = result.stdout.str()
    # tg.evaluate caught every miss (each example crashed); the test still names them
    assert "2 LLM request(s) not in cassette" in out
    assert "test_counter_is_accurate.jsonl" in out
    assert "forward call to openai:gpt-4o-mini: 'Count the fruits in the question. Reply with one" in out
    assert "and the test then failed with RuntimeError: the program failed on every example" in out
    assert ("re-record with: pytest --tracegrad-record "
            "test_fruit_counter.py::test_counter_is_accurate") in out
    assert "Traceback" not in out


def test_a_test_never_recorded_says_how_to_record_it(pytester, offline):
    pytester.makepyfile(test_new="""
        def test_new(llm_cassette):
            llm_cassette("openai:gpt-4o-mini").chat("hello")
    """)
    result = pytester.runpytest(*PLUGIN)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*no cassette at *cassettes/test_new/test_new.jsonl: this test has not been recorded "
        "yet. Record it once with real credentials: pytest --tracegrad-record "
        "test_new.py::test_new*",
    ])


def test_engines_models_and_record_modes(pytester, offline):
    """Two models in one test share a file; 'new' keeps what is recorded; 'all' starts over;
    a marker shares one cassette between tests without them erasing each other."""
    pytester.makepyfile(test_two="""
        import pytest

        def test_two_models(llm_cassette):
            small = llm_cassette("openai:gpt-4o-mini")
            big = llm_cassette("openai:gpt-4o")
            assert small.chat("two apples and a pear?").text == "3"
            assert big.chat("two apples and a pear?").text == "3"
            assert big.model == "gpt-4o" and small.calls == 1

        @pytest.mark.tracegrad_cassette("cassettes/shared.jsonl")
        def test_shared_a(llm_cassette):
            assert llm_cassette("openai:gpt-4o-mini").chat("a banana, a kiwi").text == "4"

        @pytest.mark.tracegrad_cassette("cassettes/shared.jsonl")
        def test_shared_b(llm_cassette):
            assert llm_cassette("openai:gpt-4o-mini").chat("two apples and a pear").text == "3"
    """)
    result, server = record(pytester, offline)
    result.assert_outcomes(passed=3)
    assert server.request_count == 4
    lines = (pytester.path / "cassettes/test_two/test_two_models.jsonl").read_text().splitlines()
    assert len(lines) == 2 and '"namespace": "openai:gpt-4o"' in "".join(lines)
    assert len((pytester.path / "cassettes/shared.jsonl").read_text().splitlines()) == 2
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=3)
    result, server = record(pytester, offline, "--tracegrad-record-mode", "new")
    result.assert_outcomes(passed=3)
    assert server.request_count == 0  # everything was already recorded


def test_mock_llm_and_fake_server_fixtures(pytester, offline):
    pytester.makepyfile(test_fixtures="""
        import pytest

        def test_mock(mock_llm):
            mock_llm.add_replies("first", "second")
            mock_llm.on(r"^special", "matched")
            assert mock_llm.chat("special question").text == "matched"
            assert mock_llm.chat("q").text == "first"
            assert mock_llm.chat("q2").text == "second"
            assert mock_llm.texts() == ["special question", "q", "q2"]
            with pytest.raises(AssertionError, match="no reply"):
                mock_llm.chat("q3")

        def test_server(fake_openai_server):
            import tracegrad as tg
            fake_openai_server.add_replies("hi")
            llm = tg.LLM("openai:m", base_url=fake_openai_server.url, api_key="sk-x", cache=False)
            assert llm.chat("hello").text == "hi"
            assert fake_openai_server.request_count == 1
    """)
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=2)


def test_the_plugin_is_registered_by_its_entry_point(tmp_path):
    """As installed: pyproject's entry point, found by pytest with no -p and no conftest."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    eps = meta["project"]["entry-points"]["pytest11"]
    assert eps == {"tracegrad_pytest": "tracegrad_pytest"}  # name == module: see pyproject
    dist = tmp_path / "site" / "tracegrad_probe-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tracegrad-probe\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(
        "[pytest11]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    (tmp_path / "test_x.py").write_text(textwrap.dedent("""
        import sys

        def test_x(mock_llm, request):
            assert request.config.pluginmanager.has_plugin("tracegrad_pytest")
            assert mock_llm.calls == 0
    """))
    # conftest-style listing on top of the entry point must not be an error
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tracegrad_pytest"]\n')
    env_path = f"{tmp_path / 'site'}:{ROOT}"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_the_plugin_imports_nothing_heavy():
    """pytest imports every installed plugin at start-up: this one must cost nothing."""
    code = (
        "import sys, tracegrad_pytest; "
        "heavy = [m for m in ('tracegrad', 'pydantic', 'networkx', 'openai') if m in sys.modules]; "
        "print(heavy)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stderr
