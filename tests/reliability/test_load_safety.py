"""Loading a run directory, a cassette or the cache never executes code: what is in them
is data (JSON only, no pickle, no eval), shown escaped in reports, and a damaged file is
reported by name instead of crashing."""

from __future__ import annotations

import ast
import base64
import json
import pickle
import shutil
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracegrad
from tracegrad.llm import LLMError
from tracegrad.llm.base import Request
from tracegrad.testing import MockLLM, ReplayLLM
from tracegrad.train import load_run

from .reliability_harness import (
    check_run_dir,
    cli_env,
    copy_counting,
    error_line,
    has_traceback,
    optimize_args,
    resume_args,
    run_cli,
    world_server,
)

PACKAGE = Path(tracegrad.__file__).parent


class _Payload:
    """Unpickling this creates ``path``: proof that something unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def payloads(marker: Path) -> list[str]:
    pickled = pickle.dumps(_Payload(marker))
    return [
        base64.b64encode(pickled).decode(),
        pickled.decode("latin-1"),
        f"__import__('os').system('touch {marker}')",
        f"eval(compile(\"open('{marker}', 'w')\", 'x', 'exec'))",
        f"!!python/object/apply:os.system ['touch {marker}']",
        "{{ cycler.__init__.__globals__.os.popen('touch " + str(marker) + "').read() }}",
        "<script>alert('run dir')</script><img src=x onerror=alert(1)>",
    ]


def test_the_package_never_unpickles_or_evals() -> None:
    """A static check of every module: no pickle/marshal/shelve, no eval/exec (the sandbox
    runner's exec happens in the child, inside a string), YAML only through SafeLoader."""
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        rel = path.relative_to(PACKAGE)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) \
                    else [node.module or ""]
                for n in names:
                    if n.split(".")[0] in {"pickle", "cPickle", "dill", "cloudpickle",
                                           "marshal", "shelve", "jsonpickle"}:
                        problems.append(f"{rel}:{node.lineno}: imports {n}")
            elif isinstance(node, ast.Call):
                fn = node.func
                name = fn.id if isinstance(fn, ast.Name) else \
                    fn.attr if isinstance(fn, ast.Attribute) else ""
                if name in {"eval", "exec"} and isinstance(fn, ast.Name):
                    problems.append(f"{rel}:{node.lineno}: calls {name}()")
                if name in {"unsafe_load", "full_load", "load_all"} and \
                        isinstance(fn, ast.Attribute) and getattr(fn.value, "id", "") == "yaml":
                    problems.append(f"{rel}:{node.lineno}: yaml.{name}")
                if name == "load" and isinstance(fn, ast.Attribute) and \
                        getattr(fn.value, "id", "") == "yaml":
                    loader = next((k.value for k in node.keywords if k.arg == "Loader"), None)
                    if loader is None or "Safe" not in ast.unparse(loader) and \
                            "Unique" not in ast.unparse(loader):
                        problems.append(f"{rel}:{node.lineno}: yaml.load without SafeLoader")
    assert problems == []


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("finished")
    task = copy_counting(tmp / "task")
    with world_server() as (server, _):  # kept up: the tests resume this run
        args = optimize_args(task, server.url, tmp / "run", "--json", steps=2)
        r = run_cli(args, cli_env(tmp))
        assert r.code == 0, r
        yield tmp, task, args


def test_a_run_directory_full_of_payloads_is_read_as_data(finished_run, tmp_path: Path) -> None:
    src, task, args = finished_run
    run_dir = tmp_path / "run"
    shutil.copytree(src / "run", run_dir)
    marker = tmp_path / "PWNED"
    ps = payloads(marker)

    config = json.loads((run_dir / "config.json").read_text())
    config["user"] = {"note": ps, "__reduce__": ps[0], "py/object": "os.system"}
    (run_dir / "config.json").write_text(json.dumps(config))
    lines = [json.loads(x) for x in (run_dir / "history.jsonl").read_text().splitlines()]
    for rec in lines:
        rec["feedback"] = ps
        rec["reason"] = ps[2]
        rec["events"].append({"event": ps[6], "detail": ps[5]})
    (run_dir / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    state = json.loads((run_dir / "state.json").read_text())
    state["optimizer"].setdefault("history", []).append(
        {"step": 0, "values": {"prompt": ps[5]}, "score": 0.0, "n": 1, "feedback": ps[3],
         "led_to": {}})
    state["stopped_reason"] = ps[4]
    (run_dir / "state.json").write_text(json.dumps(state))
    best = json.loads((run_dir / "best.json").read_text())
    best["note"] = ps[0]
    (run_dir / "best.json").write_text(json.dumps(best))
    (run_dir / "state.pkl").write_bytes(pickle.dumps(_Payload(marker)))

    data = load_run(run_dir)
    assert data.config["user"]["note"] == ps and data.history[0]["feedback"] == ps
    r = run_cli(["report", run_dir], cli_env(tmp_path))
    assert r.code == 0, r
    html = (run_dir / "report.html").read_text()
    assert "<script>alert(" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(" in html
    again = run_cli(resume_args(args, run_dir) + ["--steps", "3"], cli_env(tmp_path))
    assert again.code in (0, 1, 2) and not has_traceback(again.output), again
    assert not marker.exists()


@pytest.mark.parametrize("name,content", [
    ("state.json", b"\x80\x04\x95garbage"),
    ("config.json", b"{not json"),
    ("state.json", b"[" * 100_000),
])
def test_a_damaged_run_file_is_named_in_the_error(finished_run, tmp_path: Path, name: str,
                                                  content: bytes) -> None:
    src, _, args = finished_run
    run_dir = tmp_path / "run"
    shutil.copytree(src / "run", run_dir)
    (run_dir / name).write_bytes(content)
    for cmd in (["report", run_dir], resume_args(args, run_dir)):
        r = run_cli(cmd, cli_env(tmp_path))
        assert r.code == 2, r
        assert name in error_line(r.stderr) and "internal error" not in r.stderr, r
        assert not has_traceback(r.output)


def test_a_torn_last_history_line_is_cut_on_resume(finished_run, tmp_path: Path) -> None:
    src, _, args = finished_run
    run_dir = tmp_path / "run"
    shutil.copytree(src / "run", run_dir)
    with open(run_dir / "history.jsonl", "a") as f:
        f.write('{"step": 3, "feedback": ["half a li')
    r = run_cli(resume_args(args, run_dir) + ["--steps", "3"], cli_env(tmp_path))
    assert r.code == 0, r
    assert check_run_dir(run_dir, finished=True, steps=3) == []


# -- cassettes and the cache --------------------------------------------------------------------


def _record(path: Path, texts: list[str]) -> list[Request]:
    reqs = [Request(messages=[{"role": "user", "content": f"q{i}"}]) for i in range(len(texts))]
    rec = ReplayLLM(MockLLM(texts), path, mode="record")
    for r in reqs:
        rec.complete(r)
    return reqs


def test_a_cassette_full_of_payloads_replays_them_as_text(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    ps = payloads(marker)
    cassette = tmp_path / "calls.jsonl"
    reqs = _record(cassette, ps)
    entries = [json.loads(x) for x in cassette.read_text().splitlines()]
    for e in entries:
        e["completion"]["parsed"] = {"py/object": "os.system", "__reduce__": ps[0]}
        e["request"]["summary"] = ps[2]
    cassette.write_text("".join(json.dumps(e) + "\n" for e in entries))
    replay = ReplayLLM(None, cassette, mode="replay")
    assert [replay.complete(r).text for r in reqs] == ps
    assert not marker.exists()


def test_a_pickled_cassette_is_refused_with_its_line(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    cassette = tmp_path / "calls.jsonl"
    _record(cassette, ["ok"])
    with open(cassette, "ab") as f:
        f.write(pickle.dumps(_Payload(marker)) + b"\n")
    with pytest.raises(LLMError, match="line 2"):
        ReplayLLM(None, cassette, mode="replay")
    assert not marker.exists()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["key", "completion", "text", "usage", "prompt_tokens", "parsed",
                         "model", "finish_reason", "x"]), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(entry=_json)
def test_any_cassette_line_is_a_recorded_call_or_a_typed_error(tmp_path: Path, entry) -> None:
    cassette = tmp_path / "c.jsonl"
    req = Request(messages=[{"role": "user", "content": "q"}])
    key = ReplayLLM.key(req)
    if isinstance(entry, dict) and "key" in entry:
        entry["key"] = key
    cassette.write_text(json.dumps(entry) + "\n")
    try:
        replay = ReplayLLM(None, cassette, mode="replay")
        c = replay.complete(req)
    except LLMError:
        return
    assert isinstance(c.text, str)
    assert isinstance(c.usage.prompt_tokens, int) and isinstance(c.usage.completion_tokens, int)


def test_a_tampered_cache_row_is_a_miss_not_a_crash(tmp_path: Path) -> None:
    from tracegrad.llm import Cache

    marker = tmp_path / "PWNED"
    inner = MockLLM(["fresh"] * 10)
    cache = Cache(inner, tmp_path / "cache.sqlite3")
    req = Request(messages=[{"role": "user", "content": "q"}])
    assert cache.complete(req).text == "fresh"
    key = cache.key(req)
    cache.close()
    con = sqlite3.connect(tmp_path / "cache.sqlite3")
    bad_values = [
        pickle.dumps(_Payload(marker)).decode("latin-1"),
        json.dumps({"text": "x", "usage": "lots"}),
        json.dumps({"text": "x", "usage": {"prompt_tokens": "many"}}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"text": {"nested": 1}, "usage": {}}),
    ]
    for value in bad_values:
        with con:
            con.execute("UPDATE replies SET value = ? WHERE key = ?", (value, key))
        c = Cache(inner, tmp_path / "cache.sqlite3").complete(req)
        assert isinstance(c.text, str), value
    con.close()
    assert not marker.exists()
