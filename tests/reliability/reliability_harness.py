"""Shared machinery of the reliability suite and of ``scripts/fault_matrix.py`` /
``scripts/kill9_trials.py``.

Every run here is a real optimization: the counting prompt of ``prompts/`` against a
:class:`~tracegrad.testing.FakeOpenAIServer` on 127.0.0.1 that answers like the demo's
scripted world (forward, backward and optimizer requests each get a sensible reply), with
faults mixed in. A run is judged only by what a user can observe: exit code, stdout,
stderr, the run directory and the prompt file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PROMPTS = REPO / "prompts"
SECRET = "sk-test-SECRET-1234567890"
MODEL = "openai:fake-model"
MAX_RUN_FILE = 400_000  # bytes; a few steps on 5-8 short examples write far less, even with 1 MB replies

# one process-wide lock: the CLI runs in-process and patches module globals
_CLI_LOCK = threading.RLock()


# -- the task ------------------------------------------------------------------------------


DATASET_FORMATS = ("jsonl", "json-one-line")


def copy_counting(dst: Path, n_train: int = 8, n_val: int = 5, *,
                  dataset_format: str = "jsonl") -> dict[str, Path]:
    """The counting prompt and smaller train/val files in ``dst``; returns their paths.

    ``dataset_format`` "json-one-line" writes the rows as one JSON list on a single line
    (``NAME.json``), the shape ``json.dump`` produces and users hand over as is.
    """
    if dataset_format not in DATASET_FORMATS:
        raise ValueError(f"dataset_format must be one of {DATASET_FORMATS}")
    dst.mkdir(parents=True, exist_ok=True)
    prompt = dst / "object_counting.prompt"
    shutil.copyfile(PROMPTS / "object_counting.prompt", prompt)
    out = {"prompt": prompt}
    for kind, n in (("train", n_train), ("val", n_val)):
        text = (PROMPTS / f"object_counting.{kind}.jsonl").read_text(encoding="utf-8")
        lines = text.splitlines()[:n]
        if dataset_format == "jsonl":
            p = dst / f"object_counting.{kind}.jsonl"
            p.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        else:
            p = dst / f"object_counting.{kind}.json"
            p.write_text(json.dumps([json.loads(line) for line in lines]), encoding="utf-8")
        out[kind] = p
    return out


def purpose_of(body: dict[str, Any]) -> str:
    from tracegrad.demo import infer_purpose

    return infer_purpose(body.get("messages") or [])


def last_user_text(body: dict[str, Any]) -> str:
    from tracegrad.llm.base import content_to_text

    users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    return content_to_text(users[-1].get("content")) if users else ""


# -- fault scenarios -------------------------------------------------------------------------

Transform = Callable[[str, dict[str, Any]], "str | None"]
Garnish = Callable[[str, str, int], str]


@dataclass
class Scenario:
    """One way the server misbehaves.

    ``fault``/``times``/``every``: after every ``every`` served requests, the next ``times``
    requests fail with ``fault`` (a :data:`tracegrad.testing.server.FAULTS` name; a tuple
    cycles through several). ``transform(purpose, body)`` may replace a reply's content.
    ``outage_after``: after that many served requests the server fails every request
    (503) until it is "repaired"; the run must stop cleanly and resume afterwards.
    ``dataset_format``: how the train/val files are written (see :func:`copy_counting`).
    ``cache_cap``: the run's ``TRACEGRAD_CACHE_MAX_REPLY_BYTES``; no stored reply may exceed it.
    Two faults are the harness's own (:data:`WORLD_FAULTS`), not the server's: "trickle"
    sends a reply's body one byte per 0.2 s through a :class:`TrickleProxy`, "overrun"
    reports 10,000,000 reply tokens whatever limit the request carried. ``budget_usd``
    runs with that dollar budget (the fake model priced like gpt-4o-mini); ``modes``
    are the ways the matrix runs the scenario.
    ``garnish(purpose, text, nth)`` rewrites every reply (the ``nth`` of its purpose) after
    the rest; ``echo_key`` makes the server put the Authorization header where a reply holds
    :data:`~tracegrad.testing.server.AUTHORIZATION_MARK`.
    """

    name: str
    what: str
    fault: str | tuple[str, ...] | None = None
    times: int = 1
    every: int = 5
    retry_after: float | None = 0
    hang_seconds: float = 2.0
    transform: Transform | None = None
    outage_after: int | None = None
    optimizers: tuple[str, ...] = ("tgd",)
    timeout: float | None = None  # the client's timeout, if not the run's
    dataset_format: str = "jsonl"
    cache_cap: int | None = None
    garnish: Garnish | None = None
    echo_key: bool = False

    def env(self) -> dict[str, str]:
        """Variables the run sees on top of :func:`cli_env`'s."""
        return {} if self.cache_cap is None else {
            "TRACEGRAD_CACHE_MAX_REPLY_BYTES": str(self.cache_cap)}
    budget_usd: float | None = None
    modes: tuple[str, ...] = ("api", "cli")


WORLD_FAULTS = ("trickle", "overrun")
TRICKLE_MARK = "[[harness:trickle]]"
OVERRUN_MARK = "[[harness:overrun]]"
FAKE_PRICE = {"fake-model": {"input": 0.15, "output": 0.60}}  # gpt-4o-mini's, USD per 1M


def _no_tags(purpose: str, body: dict[str, Any]) -> str | None:
    if purpose == "optimizer":
        return "I read the feedback. The current prompt already looks fine to me, so I keep it."
    if purpose == "backward":
        return "The prompt should be clearer about what to answer."
    return None


def _wrong_keys(purpose: str, body: dict[str, Any]) -> str | None:
    if purpose == "backward":
        return json.dumps({"feedback_for_everything": "be clearer", "extra": 3})
    if purpose == "optimizer":
        return json.dumps({"reasoning": "renamed keys", "updates": {"prompt": "{{ question }}"},
                           "new_prompt": "Answer: {{ question }}", "value": "x"})
    return None


def _echo(purpose: str, body: dict[str, Any]) -> str | None:
    return last_user_text(body) or "(nothing)"


def _with_key(purpose: str, text: str, nth: int) -> str:
    """The world's reply with the bearer token the server was sent in it: before every
    answer, in every piece of feedback, and in every rewrite -- inside the new value of the
    first one (a candidate holding the key), beside the value in the later ones."""
    from tracegrad.testing.server import AUTHORIZATION_MARK as MARK

    said = f"(the server was called with Authorization: {MARK})"
    if purpose == "forward":
        return f"{said}\n{text}"
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):  # backward feedback, or a trace rewrite
        if purpose == "optimizer" and isinstance(data.get("values"), dict) and nth == 0:
            data["values"] = {k: f"{said}\n{v}" for k, v in data["values"].items()}
        elif purpose == "optimizer":
            data["reasoning"] = f"{data.get('reasoning', '')} {said}"
        else:
            data = {k: f"{v} {said}" for k, v in data.items()}
        return json.dumps(data)
    for close in ("\n</new_value>", "\n</value>"):
        if close in text and nth == 0:
            return text.replace(close, f"\n{said}{close}", 1)
    return f"{said}\n{text}"


SCENARIOS: list[Scenario] = [
    Scenario("429-storm+retry-after", "bursts of 3 HTTP 429 with Retry-After: 0.01",
             fault="429", times=3, every=6, retry_after=0.01),
    Scenario("429-storm-no-retry-after", "bursts of 3 HTTP 429 without Retry-After",
             fault="429", times=3, every=6, retry_after=None),
    Scenario("5xx-intermittent", "HTTP 500, 502, 503 in turn, two at a time",
             fault=("500", "502", "503"), times=2, every=5),
    Scenario("hang-past-timeout", "a request hangs for twice the client timeout (0.5 s)",
             fault="hang", times=1, every=12, timeout=0.5),
    Scenario("dropped-connections", "the server closes the connection without a reply",
             fault="drop", times=2, every=6),
    Scenario("malformed-json-body", "HTTP 200 with a truncated JSON body",
             fault="malformed", times=2, every=6),
    Scenario("empty-content", "HTTP 200 with empty message content",
             fault="empty", times=1, every=3, optimizers=("tgd", "trace")),
    Scenario("whitespace-content", "HTTP 200 whose content is only whitespace",
             fault="whitespace", times=1, every=3),
    Scenario("finish-length", "replies cut in half with finish_reason=length",
             fault="length", times=1, every=3, optimizers=("tgd", "opro")),
    Scenario("huge-1mb-replies", "1 MB replies", fault="huge", times=1, every=4),
    Scenario("missing-every-tag", "optimizer and backward replies without tags or JSON",
             transform=_no_tags, optimizers=("tgd", "trace", "opro")),
    Scenario("json-wrong-keys", "JSON replies whose keys are all wrong",
             transform=_wrong_keys, optimizers=("tgd", "trace", "opro")),
    Scenario("echo-prompt", "the model repeats the prompt back", transform=_echo,
             optimizers=("tgd", "trace")),
    Scenario("outage-then-resume", "every request fails (503) from the 12th on",
             outage_after=12),
    Scenario("json-list-one-line", "train and val are one JSON list on a single line",
             dataset_format="json-one-line"),
    Scenario("huge-over-cache-cap", "1 MB replies while the cache stores at most 100 kB",
             fault="huge", times=1, every=4, cache_cap=100_000),
    Scenario("trickle-1-byte-per-0.2s", "a reply body sent one byte per 0.2 s (no gap "
             "reaches the timeout; a total deadline must end the attempt)", fault="trickle",
             times=1, every=10),
    Scenario("usage-overrun+budget", "from the 12th request, usage claims 10,000,000 reply "
             "tokens; $0.05 budget: the run stops at that call, spend within the budget",
             fault="overrun", times=1000, every=12, budget_usd=0.05),
    Scenario("key-echo", "every reply quotes the Authorization header (Bearer sk-...)",
             garnish=_with_key, echo_key=True, optimizers=("tgd", "trace", "opro")),
]


class FaultyWorld:
    """The reply function of a FakeOpenAIServer: the scripted counting world plus faults."""

    def __init__(self, scenario: Scenario | None = None) -> None:
        from tracegrad.demo import CountingWorld

        self.world = CountingWorld()
        self.scenario = scenario
        self.server: Any = None
        self.served = 0
        self.injected = 0
        self.broken = False
        self.pending = dict.fromkeys(WORLD_FAULTS, 0)  # the harness's own faults, queued
        self._lock = threading.Lock()
        self._by_purpose: dict[str, int] = {}

    def repair(self) -> None:
        """End an outage: no more faults, every request is answered."""
        with self._lock:
            self.broken = False
            self.scenario = None
            self.pending = dict.fromkeys(WORLD_FAULTS, 0)
        if self.server is not None:
            with self.server._lock:  # drop queued faults; keep the request log
                self.server._faults.clear()

    def __call__(self, body: dict[str, Any]) -> str:
        sc = self.scenario
        with self._lock:
            self.served += 1
            n = self.served
        if sc is not None and self.server is not None:
            if sc.outage_after is not None and n >= sc.outage_after and not self.broken:
                self.broken = True
                self.server.inject("503", times=200)  # more than any run can retry through
            if sc.fault is not None and n % sc.every == 0:
                kinds = sc.fault if isinstance(sc.fault, tuple) else (sc.fault,)
                kind = kinds[(n // sc.every) % len(kinds)]
                self._inject(kind, sc)
        return self._garnished(body, self._marked(self._reply(body)))

    def _reply(self, body: dict[str, Any]) -> str:
        sc = self.scenario
        if sc is not None and sc.transform is not None:
            text = sc.transform(purpose_of(body), body)
            if text is not None:
                return text
        return self.world.http_reply(body)

    def _inject(self, kind: str, sc: Scenario) -> None:
        if kind in WORLD_FAULTS:  # this reply and the next times-1; counted when sent
            with self._lock:
                self.pending[kind] += sc.times
            return
        self.server.inject(kind, sc.times, retry_after=sc.retry_after,
                           seconds=sc.hang_seconds)  # the server's: the next times requests
        self.injected += sc.times

    def _marked(self, text: str) -> str:
        """``text`` with the mark of a queued harness fault, which the proxy or the
        server's usage report acts on."""
        with self._lock:
            for kind, mark in (("trickle", TRICKLE_MARK), ("overrun", OVERRUN_MARK)):
                if self.pending[kind] > 0:
                    self.pending[kind] -= 1
                    self.injected += 1
                    return mark + text
        return text

    def _garnished(self, body: dict[str, Any], text: str) -> str:
        sc = self.scenario
        if sc is None or sc.garnish is None:
            return text
        purpose = purpose_of(body)
        with self._lock:
            nth = self._by_purpose.get(purpose, 0)
            self._by_purpose[purpose] = nth + 1
        return sc.garnish(purpose, text, nth)


def _world_server_class() -> type:
    from tracegrad.testing import FakeOpenAIServer

    class WorldServer(FakeOpenAIServer):
        """Reports the overrun the world marked a reply with (and drops the mark)."""

        def completion_body(self, body: dict[str, Any], content: str,
                            finish_reason: str = "stop") -> dict[str, Any]:
            lie = content.startswith(OVERRUN_MARK)
            content = content.removeprefix(OVERRUN_MARK)
            reply = super().completion_body(body, content, finish_reason)
            if lie and "usage" in reply:
                reply["usage"]["completion_tokens"] = 10_000_000
                reply["usage"]["total_tokens"] = reply["usage"]["prompt_tokens"] + 10_000_000
            return reply

    return WorldServer


class _Via:
    """The world's server as seen through a proxy: its ``url`` is the proxy's."""

    def __init__(self, server: Any, proxy: Any) -> None:
        self._server, self.proxy = server, proxy
        self.url = f"http://127.0.0.1:{proxy.port}/v1"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


@contextlib.contextmanager
def world_server(scenario: Scenario | None = None, latency: float = 0.0
                 ) -> Iterator[tuple[Any, FaultyWorld]]:
    from .hostile_server import TrickleProxy

    world = FaultyWorld(scenario)
    echo = scenario is not None and scenario.echo_key
    server = _world_server_class()(world, latency=latency, echo_authorization=echo)
    world.server = server
    with server:
        if scenario is None or "trickle" not in _kinds(scenario):
            yield server, world
            return
        with TrickleProxy(server.port, TRICKLE_MARK.encode()) as proxy:
            yield _Via(server, proxy), world


def _kinds(sc: Scenario) -> tuple[str, ...]:
    return sc.fault if isinstance(sc.fault, tuple) else (sc.fault,) if sc.fault else ()


# -- the CLI -----------------------------------------------------------------------------------


@dataclass
class CLIResult:
    code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None
    seconds: float = 0.0

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __repr__(self) -> str:
        return (f"<exit {self.code} after {self.seconds:.1f}s\nstdout:\n{self.stdout[-3000:]}\n"
                f"stderr:\n{self.stderr[-3000:]}\nexception: {self.exception!r}>")


@contextlib.contextmanager
def fast_llm(timeout: float = 1.0, backoff_base: float = 0.005) -> Iterator[None]:
    """Make the engines the CLI builds use a short timeout and a short backoff.

    The CLI has --timeout but no option for the backoff (the defaults are 60 s and
    0.5 s); only what the factory is given changes, so the rest of the CLI runs as shipped.
    """
    import tracegrad.llm.factory as factory

    real = factory.LLM

    def patched(spec: str = MODEL, **kw: Any) -> Any:
        kw["timeout"] = timeout
        kw.setdefault("backoff_base", backoff_base)
        return real(spec, **kw)

    factory.LLM = patched  # type: ignore[assignment]
    try:
        yield
    finally:
        factory.LLM = real  # type: ignore[assignment]


def cli_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The variables an in-process CLI run sees (on top of the test process's)."""
    env = {"OPENAI_API_KEY": SECRET, "TRACEGRAD_CACHE_DIR": str(tmp / "cache"),
           "OPENAI_BASE_URL": "", "TRACEGRAD_NO_CACHE": "", "TRACEGRAD_PRICING": "",
           "TRACEGRAD_DEBUG": ""}
    env.update(extra)
    return env


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """``values`` in os.environ for the block (the API runs read the cache cap from there)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_cli(args: list[Any], env: dict[str, str], *, timeout: float = 1.0,
            backoff_base: float = 0.005) -> CLIResult:
    """``tracegrad ARGS`` in this process (typer's CliRunner), with fast engine defaults."""
    from typer.testing import CliRunner

    from tracegrad.cli import app

    t0 = time.perf_counter()
    with _CLI_LOCK, fast_llm(timeout, backoff_base):
        # CliRunner sets variables whose value is None to "unset"
        clean = {k: (v if v != "" else None) for k, v in env.items()}
        r = CliRunner().invoke(app, [str(a) for a in args], env=clean)  # type: ignore[arg-type]
    exc = r.exception if r.exception is not None and not isinstance(r.exception, SystemExit) \
        else None
    return CLIResult(r.exit_code, r.stdout, r.stderr, exc, time.perf_counter() - t0)


CLI_BOOT = "import sys; from tracegrad.cli import app; sys.exit(app())"


def subprocess_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "TRACEGRAD_", "PYTEST_"))}
    env.update({"OPENAI_API_KEY": SECRET, "TRACEGRAD_CACHE_DIR": str(tmp / "cache"),
                "PYTHONUNBUFFERED": "1", "COLUMNS": "200"})
    env.update(extra)
    return env


def start_cli(args: list[Any], env: dict[str, str], cwd: Path | None = None
              ) -> subprocess.Popen[str]:
    """``tracegrad ARGS`` as a real child process (what a user's shell runs)."""
    return subprocess.Popen([sys.executable, "-c", CLI_BOOT, *[str(a) for a in args]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=cwd)


def run_cli_subprocess(args: list[Any], env: dict[str, str], timeout: float = 120,
                       cwd: Path | None = None) -> CLIResult:
    t0 = time.perf_counter()
    p = start_cli(args, env, cwd)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return CLIResult(-999, out, err + "\n[harness: timed out]", None,
                         time.perf_counter() - t0)
    return CLIResult(p.returncode, out, err, None, time.perf_counter() - t0)


def optimize_args(task: dict[str, Path], server_url: str, run_dir: Path, *extra: Any,
                  steps: int = 3, batch_size: int = 3, optimizer: str = "tgd") -> list[Any]:
    return ["optimize", task["prompt"], "--train", task["train"], "--val", task["val"],
            "--base-url", server_url, "--model", MODEL, "--steps", steps, "--batch-size",
            batch_size, "--concurrency", 4, "--optimizer", optimizer, "--run-dir", run_dir,
            *extra]


def resume_args(args: list[Any], run_dir: Path) -> list[Any]:
    """The same command with ``--run-dir DIR`` replaced by ``--resume DIR``."""
    out = list(args)
    i = out.index("--run-dir")
    out[i] = "--resume"
    out[i + 1] = run_dir
    return out


# -- invariants ------------------------------------------------------------------------------


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Records of a JSONL file and problems (unparseable or torn lines)."""
    problems: list[str] = []
    records: list[dict[str, Any]] = []
    if not path.exists():
        return records, problems
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        problems.append(f"{path.name}: the last line is torn")
    for i, line in enumerate(data.split(b"\n")[:-1] if data.endswith(b"\n")
                             else data.split(b"\n"), 1):
        try:
            rec = json.loads(line)
        except ValueError:
            problems.append(f"{path.name}:{i}: not JSON")
            continue
        if not isinstance(rec, dict):
            problems.append(f"{path.name}:{i}: not an object")
            continue
        records.append(rec)
    return records, problems


def check_run_dir(run_dir: Path, *, finished: bool = False, steps: int | None = None,
                  allow_torn: bool = False) -> list[str]:
    """What is wrong with a run directory; [] when it is sound.

    Always: every JSON file parses, no temp file is left behind, history steps are
    1..n with none twice. ``finished``: the run ended (state.json says why) and the
    history holds exactly ``state.step`` records -- ``steps`` of them unless it stopped
    early on a perfect score. ``allow_torn``: a kill -9 may leave one extra or torn line,
    which a resume cuts off.
    """
    problems: list[str] = []
    if not run_dir.is_dir():
        return [f"{run_dir}: no run directory"]
    for name in ("config.json", "state.json", "best.json"):
        p = run_dir / name
        if p.exists():
            try:
                if not isinstance(json.loads(p.read_text(encoding="utf-8")), dict):
                    problems.append(f"{name}: not a JSON object")
            except ValueError as e:
                problems.append(f"{name}: unreadable ({e})")
        elif name == "config.json" and finished:
            problems.append("config.json is missing")
    if not allow_torn:
        leftovers = [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
        if leftovers:
            problems.append(f"temp files left behind: {leftovers}")
    history, hp = read_jsonl(run_dir / "history.jsonl")
    if not allow_torn:
        problems += hp
    for name in ("history.jsonl", "state.json", "best.json", "config.json", "graph.json"):
        p = run_dir / name
        if p.exists() and p.stat().st_size > MAX_RUN_FILE:
            problems.append(f"{name} holds {p.stat().st_size} bytes: long values are not bounded")
    got = [r.get("step") for r in history]
    if got != list(range(1, len(got) + 1)):
        problems.append(f"history steps are {got}, not 1..{len(got)}")
    state: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        state = json.loads((run_dir / "state.json").read_text(encoding="utf-8"))
    if finished:
        if not state:
            problems.append("state.json is missing after the run ended")
        elif not state.get("stopped_reason"):
            problems.append("state.json does not say why the run stopped")
        elif state.get("step") != len(got):
            problems.append(f"state.json says step {state.get('step')}, history has {len(got)}")
        if steps is not None and state and state.get("stopped_reason") == "steps" \
                and len(got) != steps:
            problems.append(f"finished with {len(got)} steps, {steps} were asked for")
    elif state and allow_torn:
        if not state.get("step", 0) <= len(got) <= state.get("step", 0) + 1:
            problems.append(f"state.json says step {state.get('step')}, history has {len(got)}")
    elif state and state.get("step") != len(got):
        problems.append(f"state.json says step {state.get('step')}, history has {len(got)}")
    return problems


def check_not_waited_out(server: Any) -> list[str]:
    """No trickled reply was read to its end: each attempt's deadline cut it."""
    proxy = getattr(server, "proxy", None)
    if proxy is None or not proxy.waited_out:
        return []
    return [f"{proxy.waited_out} trickled reply chunk(s) were waited out, not cut by a deadline"]


def check_no_marks(run_dir: Path) -> list[str]:
    """A reply the world marked as faulty never reached the run: a trickled reply was cut
    by its deadline, not waited out; a reply claiming an overrun was discarded."""
    problems = []
    for f in sorted(run_dir.rglob("*")) if run_dir.exists() else []:
        if not f.is_file():
            continue
        text = f.read_text(encoding="utf-8", errors="replace")
        for mark in (TRICKLE_MARK, OVERRUN_MARK):
            if mark in text:
                problems.append(f"{f.name} holds a reply marked {mark}")
    return problems


def temp_litter(path: Path) -> list[str]:
    """Temp files of an atomic write left beside ``path`` (a process killed mid-write)."""
    return sorted(p.name for p in path.parent.iterdir()
                  if p.name.startswith(f".{path.name}") and p.name.endswith(".tmp"))


def check_prompt_file(path: Path, original: bytes, *, allow_litter: bool = False) -> list[str]:
    """The user's prompt file is byte-identical, or replaced by a valid prompt file with the
    same front matter while the previous version is kept as NAME.bak. No temp files of an
    atomic write are left beside it (unless ``allow_litter``: a kill -9 mid-write)."""
    litter = [] if allow_litter else temp_litter(path)
    if litter:
        return [f"temp files left beside {path.name}: {litter}"]
    from tracegrad.promptfile import PromptFile, PromptFileError, backup_path

    try:
        now = path.read_bytes()
    except OSError as e:
        return [f"{path.name}: unreadable ({e})"]
    if now == original:
        return []
    problems = []
    bak = backup_path(path)
    if not bak.exists():
        problems.append(f"{path.name} changed and there is no {bak.name}")
    elif bak.read_bytes() != original:
        problems.append(f"{bak.name} does not hold the original")
    try:
        new = PromptFile.load(path)
        old = PromptFile.parse(original.decode("utf-8"), path)
    except PromptFileError as e:
        return [*problems, f"{path.name} no longer parses: {e}"]
    if new.prefix != old.prefix:
        problems.append(f"{path.name}: the front matter changed")
    if new.fields != old.fields:
        problems.append(f"{path.name}: the template fields changed")
    return problems


def check_cache(cache_dir: Path, *, max_reply_bytes: int | None = None) -> list[str]:
    """Every SQLite cache file under ``cache_dir`` opens and passes integrity_check; with
    ``max_reply_bytes``, no stored reply text is longer than that."""
    problems = []
    for db in sorted(cache_dir.rglob("*.sqlite3")) if cache_dir.exists() else []:
        try:
            con = sqlite3.connect(db, timeout=10)
            try:
                ok = con.execute("PRAGMA integrity_check").fetchone()[0]
                values = [v for (v,) in con.execute("SELECT value FROM replies")]
            finally:
                con.close()
        except sqlite3.Error as e:
            problems.append(f"{db.name}: {e}")
            continue
        if ok != "ok":
            problems.append(f"{db.name}: integrity_check says {ok}")
        if max_reply_bytes is not None:
            over = [n for n in map(_stored_reply_bytes, values) if n > max_reply_bytes]
            if over:
                problems.append(f"{db.name}: {len(over)} stored replies are over the cap of "
                                f"{max_reply_bytes} bytes (the largest {max(over)})")
    return problems


def _stored_reply_bytes(value: str) -> int:
    try:
        text = json.loads(value).get("text") or ""
    except (ValueError, AttributeError):
        return 0  # unreadable rows are the cache's business (read as misses), not the cap's
    return len(str(text).encode("utf-8", "surrogatepass"))


def key_leaks(root: Path) -> list[str]:
    """Every file under ``root`` that holds the API key, or the end of it that a cut-short
    text keeps: the run directory, the cache (SQLite pages and WAL too), the prompt file
    and its .bak."""
    found = []
    for f in sorted(root.rglob("*")) if root.exists() else []:
        if f.is_file():
            text = f.read_bytes().decode("utf-8", errors="replace")
            if SECRET in text or SECRET[-12:] in text:
                found.append(f"the API key is in {f.relative_to(root)}")
    return found


def cache_entries(cache_dir: Path) -> int:
    n = 0
    for db in cache_dir.rglob("*.sqlite3") if cache_dir.exists() else []:
        con = sqlite3.connect(db, timeout=10)
        try:
            n += con.execute("SELECT count(*) FROM replies").fetchone()[0]
        finally:
            con.close()
    return n


def has_traceback(text: str) -> bool:
    return "Traceback (most recent call last)" in text


def error_line(stderr: str) -> str:
    for line in stderr.splitlines():
        if line.startswith("error:") or line.startswith("interrupted"):
            return line.strip()
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


# -- the fault matrix ------------------------------------------------------------------------


@dataclass
class MatrixRow:
    scenario: str
    mode: str
    optimizer: str
    outcome: str  # completed | stopped | unclean
    code: int | None = None
    message: str = ""
    resumed: bool | None = None  # a stopped run resumed to completion
    traceback: bool = False
    unhelpful: bool = False  # stopped without saying how to resume
    damage: list[str] = field(default_factory=list)
    requests: int = 0
    injected: int = 0
    seconds: float = 0.0


def run_scenario_cli(sc: Scenario, optimizer: str, tmp: Path, *, steps: int = 3,
                     timeout: float = 1.0) -> MatrixRow:
    """One scenario through ``tracegrad optimize`` (in-process), then checks."""
    task = copy_counting(tmp / "task", dataset_format=sc.dataset_format)
    original = task["prompt"].read_bytes()
    run_dir = tmp / "run"
    env = cli_env(tmp, **sc.env())
    row = MatrixRow(sc.name, "cli", optimizer, "unclean")
    t0 = time.perf_counter()
    timeout = sc.timeout or timeout
    with world_server(sc) as (server, world), _priced(sc):
        sc_hang = sc.hang_seconds
        if sc.fault == "hang":
            sc.hang_seconds = 2 * timeout
        budget = ["--budget-usd", sc.budget_usd] if sc.budget_usd is not None else []
        args = optimize_args(task, server.url, run_dir, "--json", *budget, steps=steps,
                             optimizer=optimizer)
        try:
            r = run_cli(args, env, timeout=timeout)
        finally:
            sc.hang_seconds = sc_hang
        row.code = r.code
        row.traceback = has_traceback(r.output) or r.exception is not None
        row.damage += check_prompt_file(task["prompt"], original)
        if SECRET in r.output:
            row.damage.append("the API key was printed")
        if r.exception is not None:
            row.outcome = "unclean"
            row.message = f"exception escaped: {r.exception!r}"
        elif r.code == 0:
            row.outcome = "completed"
            try:
                data = json.loads(r.stdout)
                if data.get("stopped_reason") not in ("steps", "perfect"):
                    row.damage.append(f"exit 0 but stopped_reason {data.get('stopped_reason')}")
            except ValueError:
                row.damage.append("--json stdout is not one JSON object")
            row.damage += check_run_dir(run_dir, finished=True, steps=steps)
        elif r.code in (1, 130) and error_line(r.stderr):
            row.outcome = "stopped"
            row.message = error_line(r.stderr)
            if f"--resume {run_dir}" not in " ".join(r.stderr.split()):
                row.unhelpful = True  # the message must say how to continue
            if r.stdout.strip():
                row.damage.append("a failed run printed to stdout")
            row.damage += check_run_dir(run_dir)
            world.repair()
            again = run_cli(resume_args(args, run_dir), env, timeout=timeout)
            row.traceback = row.traceback or has_traceback(again.output)
            row.resumed = again.code == 0 and again.exception is None
            if not row.resumed:
                row.damage.append(f"resume failed: {again!r}")
            row.damage += check_run_dir(run_dir, finished=True, steps=steps)
            row.damage += check_prompt_file(task["prompt"], original)
        else:
            row.outcome = "unclean"
            row.message = f"exit {r.code}: {error_line(r.stderr)}"
        row.requests = server.request_count
        row.injected = world.injected
        row.damage += check_not_waited_out(server)
    row.damage += check_no_marks(run_dir)
    row.damage += check_cache(tmp / "cache", max_reply_bytes=sc.cache_cap)
    row.damage += key_leaks(tmp)
    row.seconds = time.perf_counter() - t0
    return row


def run_scenario_api(sc: Scenario, optimizer: str, tmp: Path, *, steps: int = 3,
                     timeout: float = 1.0) -> MatrixRow:
    """One scenario through ``tg.optimize`` with real OpenAIEngines, then checks."""
    from tracegrad.llm import LLM, LLMError
    from tracegrad.promptfile import PromptFile
    from tracegrad.train import optimize

    task = copy_counting(tmp / "task", dataset_format=sc.dataset_format)
    original = task["prompt"].read_bytes()
    run_dir = tmp / "run"
    row = MatrixRow(sc.name, "api", optimizer, "unclean")
    t0 = time.perf_counter()
    timeout = sc.timeout or timeout

    engines: list[Any] = []

    def attempt(url: str, resume: bool) -> Any:
        pf = PromptFile.load(task["prompt"])
        engine = LLM(MODEL, base_url=url, api_key=SECRET, cache=tmp / "cache" / "cache.sqlite3",
                     backoff_base=0.005, timeout=timeout, max_concurrency=4)
        engines.append(engine)
        return optimize(pf.to_module(engine), pf.load_dataset(task["train"]),
                        pf.load_dataset(task["val"]), metric=pf.metric_fn(judge_engine=engine),
                        optimizer=optimizer, steps=steps, batch_size=3, engine=engine,
                        optimizer_engine=engine, run_dir=run_dir,
                        resume=run_dir if resume else None, concurrency=4, progress=False,
                        budget=sc.budget_usd)

    with world_server(sc) as (server, world), environ(sc.env()), _priced(sc):
        sc_hang = sc.hang_seconds
        if sc.fault == "hang":
            sc.hang_seconds = 2 * timeout
        try:
            result = attempt(server.url, False)
            if result.stopped_reason in ("budget", "usage_overrun") and sc.budget_usd is not None:
                msg = _budget_stop_message(engines[-1], sc.budget_usd)
                if msg.startswith("OVERSPENT"):
                    row.damage.append(msg)
                raise _BudgetStop(msg)
        except (LLMError, RuntimeError) as e:  # typed, with a message: a clean stop
            row.outcome, row.message = "stopped", f"{type(e).__name__}: {e}"[:300]
            row.damage += check_run_dir(run_dir)
            world.repair()
            try:
                result = attempt(server.url, True)
                row.resumed = result.stopped_reason in ("steps", "perfect")
            except Exception as e2:  # noqa: BLE001
                row.resumed = False
                row.damage.append(f"resume failed: {type(e2).__name__}: {e2}")
            row.damage += check_run_dir(run_dir, finished=True, steps=steps)
        except Exception as e:  # noqa: BLE001 - anything else is a defect
            row.outcome, row.message = "unclean", f"{type(e).__name__}: {e}"[:300]
            row.traceback = True
        else:
            row.outcome = "completed"
            if result.stopped_reason not in ("steps", "perfect"):
                row.damage.append(f"stopped_reason {result.stopped_reason}")
            row.damage += check_run_dir(run_dir, finished=True, steps=steps)
        finally:
            sc.hang_seconds = sc_hang
        row.requests = server.request_count
        row.injected = world.injected
        row.damage += check_not_waited_out(server)
    row.damage += check_no_marks(run_dir)
    row.damage += check_prompt_file(task["prompt"], original)
    row.damage += check_cache(tmp / "cache", max_reply_bytes=sc.cache_cap)
    row.damage += key_leaks(tmp)
    row.seconds = time.perf_counter() - t0
    return row


class _BudgetStop(RuntimeError):
    """A run that stopped on its budget: a clean stop the matrix then resumes."""


def _budget_stop_message(engine: Any, budget: float) -> str:
    """What the stop says, checked against the promise: the spend stayed in the budget."""
    snap = engine.snapshot()
    spent, overruns = snap["total"]["usd"], snap.get("overruns") or []
    if spent > budget:
        return f"OVERSPENT: {spent:.6f} USD of a {budget} USD budget"
    first = overruns[0] if overruns else {}
    return (f"budget stop, {spent:.6f} of {budget} USD spent; {len(overruns)} overrun(s), "
            f"first: {first.get('reported_completion_tokens', 0):,} reported / "
            f"{first.get('reserved_completion_tokens', 0):,} reserved reply tokens")


@contextlib.contextmanager
def _priced(sc: Scenario) -> Iterator[None]:
    """Give the fake model a price while a budget scenario runs (a dollar budget cannot
    limit an unpriced model)."""
    if sc.budget_usd is None:
        yield
        return
    from tracegrad.llm import set_pricing

    set_pricing(FAKE_PRICE)
    try:
        yield
    finally:
        set_pricing(None)


Plan = list[tuple[Scenario, str, str]]  # (scenario, optimizer, mode)


def full_plan() -> Plan:
    """Every scenario with each of its optimizers, through the API and the CLI."""
    return [(sc, opt, mode) for sc in SCENARIOS for opt in sc.optimizers
            for mode in ("api", "cli") if mode in sc.modes]


def quick_plan() -> Plan:
    """The CI subset: every scenario through the CLI, the parser-stressing ones with every
    optimizer, four transport faults also through the Python API; fewer 1 MB replies."""
    plan: Plan = []
    for sc in SCENARIOS:
        if sc.fault == "huge":
            sc = replace(sc, every=15)
        if "cli" not in sc.modes:
            plan.append((sc, sc.optimizers[0], sc.modes[0]))
            continue
        plan.append((sc, sc.optimizers[0], "cli"))
        if sc.transform is not None:
            plan += [(sc, opt, "cli") for opt in sc.optimizers[1:]]
        if (sc.fault == "429" and sc.retry_after is None) or sc.fault == "drop" \
                or isinstance(sc.fault, tuple) or sc.outage_after is not None:
            plan.append((sc, sc.optimizers[0], "api"))
    return plan


def run_matrix(tmp: Path, plan: Plan | None = None, *, steps: int = 3, timeout: float = 1.0,
               on_row: Callable[[MatrixRow], None] | None = None) -> list[MatrixRow]:
    rows: list[MatrixRow] = []
    for sc, opt, mode in plan if plan is not None else full_plan():
        where = tmp / f"{sc.name}-{opt}-{mode}"
        fn = run_scenario_cli if mode == "cli" else run_scenario_api
        row = fn(sc, opt, where, steps=steps, timeout=timeout)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def summarize(rows: list[MatrixRow]) -> dict[str, int]:
    return {
        "scenarios": len({r.scenario for r in rows}),
        "runs": len(rows),
        "completed": sum(r.outcome == "completed" for r in rows),
        "stopped_cleanly": sum(r.outcome == "stopped" and not r.traceback and not r.unhelpful
                               for r in rows),
        "resumed_after_stop": sum(bool(r.resumed) for r in rows),
        "unclean": sum(r.outcome == "unclean" for r in rows),
        "tracebacks": sum(r.traceback for r in rows),
        "files_damaged": sum(bool(r.damage) for r in rows),
        "faults_injected": sum(r.injected for r in rows),
        "requests": sum(r.requests for r in rows),
    }


def format_table(rows: list[MatrixRow]) -> str:
    lines = [f"{'scenario':<28}{'mode':<5}{'opt':<6}{'outcome':<10}{'exit':>5}{'req':>6}"
             f"{'faults':>7}{'resumed':>8}{'damage':>7}{'sec':>6}  message"]
    for r in rows:
        resumed = "-" if r.resumed is None else ("yes" if r.resumed else "NO")
        lines.append(
            f"{r.scenario:<28}{r.mode:<5}{r.optimizer:<6}{r.outcome:<10}"
            f"{'' if r.code is None else r.code:>5}{r.requests:>6}{r.injected:>7}{resumed:>8}"
            f"{len(r.damage):>7}{r.seconds:>6.1f}  {r.message[:90]}")
        for d in r.damage:
            lines.append(f"    damage: {d[:300]}")
    s = summarize(rows)
    lines.append("")
    lines.append(f"scenarios tried: {s['scenarios']}  runs: {s['runs']}  completed: "
                 f"{s['completed']}  stopped cleanly: {s['stopped_cleanly']} (resumed to the end:"
                 f" {s['resumed_after_stop']})  unclean: {s['unclean']}  tracebacks: "
                 f"{s['tracebacks']}  files damaged: {s['files_damaged']}")
    return "\n".join(lines)


# -- kill -9 ---------------------------------------------------------------------------------


@dataclass
class KillTrial:
    index: int
    kill_after: float
    killed: bool
    state_after_kill: str
    damage_after_kill: list[str]
    resumed: bool
    resume_code: int | None
    damage_after_resume: list[str]
    same_as_reference: bool | None
    steps: int
    seconds: float
    message: str = ""
    litter: list[str] = field(default_factory=list)


def state_summary(run_dir: Path) -> str:
    if not (run_dir / "config.json").exists():
        return "not started" if run_dir.exists() else "no run dir"
    history, _ = read_jsonl(run_dir / "history.jsonl")
    try:
        state = json.loads((run_dir / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"config only, {len(history)} history lines"
    return f"state step {state.get('step')}, {len(history)} history lines, " \
           f"stopped {state.get('stopped_reason')!r}"


def best_value(run_dir: Path) -> Any:
    try:
        return json.loads((run_dir / "best.json").read_text(encoding="utf-8")).get("state")
    except (OSError, ValueError):
        return None


def wait_then_signal(p: subprocess.Popen[str], sig: int, *, after: float | None = None,
                     when: Callable[[], bool] | None = None, limit: float = 60.0) -> bool:
    """Send ``sig`` to ``p`` as soon as ``when()`` is true, or after ``after`` seconds.
    False if the process ended first (or ``when`` never came true within ``limit``)."""
    deadline = time.monotonic() + (after if after is not None else limit)
    while p.poll() is None:
        if when is not None and when():
            os.kill(p.pid, sig)
            return True
        if time.monotonic() >= deadline:
            if after is None:
                return False
            os.kill(p.pid, sig)
            return True
        time.sleep(0.005)
    return False


def history_lines(run_dir: Path) -> int:
    try:
        return (run_dir / "history.jsonl").read_bytes().count(b"\n")
    except OSError:
        return 0


def kill9_trial(index: int, tmp: Path, server_url: str, kill_after: float | None = None, *,
                when: Callable[[Path], bool] | None = None, steps: int = 3,
                reference: Any = None, timeout: float = 120,
                in_process_resume: bool = False) -> KillTrial:
    """Start ``tracegrad optimize`` as a child, SIGKILL it after ``kill_after`` seconds (or
    once ``when(run_dir)`` holds), check what it left, then ``--resume`` it to the end and
    check again (``in_process_resume``: the resume runs the CLI in this process, which
    saves an interpreter start in CI)."""
    task = copy_counting(tmp / "task")
    original = task["prompt"].read_bytes()
    run_dir = tmp / "run"
    env = subprocess_env(tmp)
    args = optimize_args(task, server_url, run_dir, "--json", steps=steps)
    t0 = time.perf_counter()
    p = start_cli(args, env, cwd=tmp)
    killed = wait_then_signal(p, signal.SIGKILL, after=kill_after,
                              when=(lambda: when(run_dir)) if when is not None else None)
    p.communicate()
    kill_after = time.perf_counter() - t0 if kill_after is None else kill_after
    after = state_summary(run_dir)
    damage = check_run_dir(run_dir, allow_torn=True) if run_dir.exists() else []
    damage += check_prompt_file(task["prompt"], original, allow_litter=True)
    damage += check_cache(tmp / "cache")
    # killed before the CLI made the run directory: nothing started, so the user reruns the
    # command (the CLI had not yet printed "run dir: ..."); otherwise they resume
    again = resume_args(args, run_dir) if run_dir.exists() else args
    if in_process_resume:
        r = run_cli(again, cli_env(tmp))
    else:
        r = run_cli_subprocess(again, env, timeout=timeout, cwd=tmp)
    resumed = r.code == 0 and not has_traceback(r.output) and r.exception is None
    late = check_run_dir(run_dir, finished=True, steps=steps)
    late += check_prompt_file(task["prompt"], original, allow_litter=True)
    late += check_cache(tmp / "cache")
    if SECRET in r.output:
        late.append("the API key was printed")
    history, _ = read_jsonl(run_dir / "history.jsonl")
    same = None if reference is None else best_value(run_dir) == reference
    return KillTrial(index, kill_after, killed, after, damage, resumed, r.code, late, same,
                     len(history), time.perf_counter() - t0,
                     "" if resumed else error_line(r.stderr) or r.stderr[-500:],
                     temp_litter(task["prompt"]))
