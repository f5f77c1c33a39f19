"""API keys never appear in run directories, call logs, caches, reports, error messages or
``--json`` output -- checked with a recognisable fake key across whole runs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tracegrad.llm import LLM, LLMError
from tracegrad.llm.base import Request
from tracegrad.promptfile import PromptFile
from tracegrad.train import optimize

from .reliability_harness import (
    MODEL,
    SECRET,
    cli_env,
    copy_counting,
    has_traceback,
    optimize_args,
    run_cli,
    run_cli_subprocess,
    subprocess_env,
    world_server,
)

# the key, and the parts a careless redaction might leave
FRAGMENTS = (SECRET, SECRET[3:], SECRET[-12:])


def leaks(text: str) -> list[str]:
    return [f for f in FRAGMENTS if f in text]


def files_leaking(*roots: Path) -> dict[str, list[str]]:
    """Every file under ``roots`` (binary files too: SQLite pages) that holds the key."""
    found = {}
    for root in roots:
        for f in [root] if root.is_file() else root.rglob("*"):
            if f.is_file():
                hits = leaks(f.read_bytes().decode("utf-8", errors="replace"))
                if hits:
                    found[str(f)] = hits
    return found


def test_a_whole_cli_run_with_the_key_in_the_environment_leaks_it_nowhere(tmp_path: Path
                                                                           ) -> None:
    task = copy_counting(tmp_path / "task")
    run_dir = tmp_path / "run"
    env = subprocess_env(tmp_path)  # OPENAI_API_KEY=SECRET, as a user would export it
    with world_server() as (server, _):
        r = run_cli_subprocess(optimize_args(task, server.url, run_dir, "--json"), env,
                               cwd=tmp_path)
        assert r.code == 0, r
        assert server.requests and all(b["_authorized"] for b in server.requests)
        report = run_cli(["report", run_dir], cli_env(tmp_path))
        assert report.code == 0, report
        ev = run_cli(["eval", task["prompt"], "--data", task["val"], "--base-url", server.url,
                      "--model", MODEL, "--json"], cli_env(tmp_path))
        assert ev.code == 0, ev
        info = run_cli(["cache", "info", "--json"], cli_env(tmp_path))
        assert info.code == 0, info
    data = json.loads(r.stdout)
    assert data["written"], "a run that rewrote the prompt, so every file kind exists"
    # the run really produced everything the grep below must cover
    for name in ("config.json", "history.jsonl", "state.json", "best.json", "report.html",
                 "calls.jsonl", "best.prompt", "original.prompt"):
        assert (run_dir / name).is_file(), name
    calls = [json.loads(x) for x in (run_dir / "calls.jsonl").read_text().splitlines()]
    assert len(calls) == len(server.requests)
    for result in (r, report, ev, info):
        assert leaks(result.stdout + result.stderr) == [], result
    assert files_leaking(tmp_path) == {}  # run dir, call log, cache, prompt, .bak, report


class _KeyEchoingServer:
    """Answers every request with ``status`` and an error that quotes the bearer token, as
    some servers do ("Incorrect API key provided: sk-...")."""

    def __init__(self, status: int) -> None:
        status_code = status

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                token = self.headers.get("Authorization", "")
                body = json.dumps({"error": {
                    "message": f"Incorrect API key provided: {token}. Authorization: {token}",
                    "type": "invalid_request_error", "param": None, "code": "invalid_api_key",
                }}).encode()
                self.send_response(status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Echo", token)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.01}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> _KeyEchoingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(params=[401, 400, 500])
def echoing(request: pytest.FixtureRequest) -> Iterator[_KeyEchoingServer]:
    with _KeyEchoingServer(request.param) as s:
        yield s


def test_errors_that_quote_the_key_are_redacted_in_the_cli(echoing: _KeyEchoingServer,
                                                           tmp_path: Path) -> None:
    task = copy_counting(tmp_path / "task")
    run_dir = tmp_path / "run"
    for extra in ([], ["--json"]):
        r = run_cli(optimize_args(task, echoing.url, run_dir, *extra, steps=1),
                    cli_env(tmp_path))
        assert r.code in (1, 2), r
        assert "error:" in r.stderr and not has_traceback(r.output), r
        assert leaks(r.output) == [], r
    assert files_leaking(tmp_path) == {}


def test_errors_that_quote_the_key_are_redacted_in_the_api(echoing: _KeyEchoingServer,
                                                           tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    engine = LLM(MODEL, base_url=echoing.url, api_key=SECRET, cache=tmp_path / "c.sqlite3",
                 backoff_base=0.001, max_retries=1, call_log=log)
    with pytest.raises(LLMError) as info:
        engine.complete(Request(messages=[{"role": "user", "content": "hi"}]))
    assert leaks(str(info.value)) == [] and leaks(repr(info.value)) == []
    chain = info.value.__cause__
    while chain is not None:  # what a traceback would print
        assert leaks(str(chain)) == [] or not isinstance(chain, LLMError), chain
        chain = chain.__cause__
    assert log.exists() and files_leaking(tmp_path) == {}


def test_a_key_in_the_base_url_is_never_shown(tmp_path: Path) -> None:
    task = copy_counting(tmp_path / "task")
    run_dir = tmp_path / "run"
    with world_server() as (server, _):
        url = server.url.replace("http://", f"http://user:{SECRET}@")
        r = run_cli(optimize_args(task, url, run_dir, "--json", steps=1),
                    cli_env(tmp_path, OPENAI_API_KEY="sk-test-OTHER-0987654321"))
    assert not has_traceback(r.output), r
    assert leaks(r.output) == [], r
    assert files_leaking(tmp_path) == {}


def test_api_run_with_a_call_log_under_faults_leaks_nothing(tmp_path: Path) -> None:
    """The key passed as api_key= (not in the environment), a call log in the run
    directory, and an outage so that the run stops and error entries are logged too; then
    the run is resumed to the end."""
    task = copy_counting(tmp_path / "task")
    run_dir = tmp_path / "run"
    pf = PromptFile.load(task["prompt"])

    def run(url: str, resume: bool):
        engine = LLM(MODEL, base_url=url, api_key=SECRET, max_retries=0,
                     cache=tmp_path / "cache.sqlite3", call_log=run_dir / "calls.jsonl")
        return optimize(pf.to_module(engine), pf.load_dataset(task["train"]),
                        pf.load_dataset(task["val"]), metric=pf.metric_fn(), steps=2,
                        batch_size=3, engine=engine, run_dir=run_dir,
                        resume=run_dir if resume else None, progress=False,
                        config={"note": f"user config mentioning {SECRET}",
                                "api_key": SECRET})

    with world_server() as (server, _):
        server.inject("503", times=1)  # no retries: the run stops at once, and says why
        with pytest.raises(LLMError) as info:
            run(server.url, resume=False)
        assert leaks(str(info.value)) == []
        result = run(server.url, resume=True)
    assert result.steps_done == 2
    entries = [json.loads(x) for x in (run_dir / "calls.jsonl").read_text().splitlines()]
    assert any(e["error"] for e in entries) and any(e["response"] for e in entries)
    assert leaks(json.dumps(result.to_dict(), default=str)) == []
    assert files_leaking(tmp_path) == {}
