"""The OS sandbox (issue 12 s1): the escape that beat the in-process guard, run through TGD
under bubblewrap, reaches nothing -- no key, no subprocess, no connection to a listener on
127.0.0.1, no file outside the sandbox's /tmp, no read of /root or /proc/<ppid>. Without an OS
sandbox LLM-written code is refused unless the user opts in, and the opt-in is announced."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import tracegrad as tg
from tracegrad import sandbox
from tracegrad.ops.python import ExecutionError
from tracegrad.sandbox_bwrap import os_sandbox_available

from .reliability_harness import SECRET

# skipped on a developer machine without bubblewrap; never in CI, which installs it
needs_bwrap = pytest.mark.skipif(
    not (sys.platform == "linux" and os_sandbox_available()) and os.environ.get("CI") != "true",
    reason="bubblewrap cannot run here (.ci/run installs it)",
)

# the escape from issue 12: patches the guard's checks in the child's __main__, then reads the
# parent's environment, runs a program, writes outside, connects to the parent's listener
ESCAPE = textwrap.dedent('''
    import dataclasses
    def double(x):
        out = {}
        m = dataclasses.sys.modules["__main__"]
        class Yes(dict):
            def __contains__(self, k): return True
            def __getitem__(self, k): return ()
        try:
            m._CHANGES = Yes(); m._readable = lambda p: True; m._inside = lambda p: True
        except Exception as e:
            out["patch"] = repr(e)
        for key, act in [
            ("environ", lambda: [e.decode("latin-1") for e in m.builtins.open(
                "/proc/%d/environ" % m.os.getppid(), "rb").read().split(bytes(1))]),
            ("own-env", lambda: dict(m.os.environ)),
            ("root", lambda: m.os.listdir("/root")),
            ("subprocess", lambda: dataclasses.inspect.importlib.import_module(
                "subprocess").run(["id"], capture_output=True).stdout.decode()),
            ("write", lambda: m.builtins.open(OUTSIDE, "w").write("x")),
            ("connect", lambda: dataclasses.inspect.importlib.import_module(
                "socket").create_connection(("127.0.0.1", PORT), timeout=2).send(b"pwned")),
        ]:
            try:
                out[key] = ["ran", act()]
            except BaseException as e:
                out[key] = ["refused", repr(e)]
        return out
''')


class _Listener:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.stop = True
        self.thread.join(2)
        self.sock.close()


@needs_bwrap
def test_the_escape_payload_applied_by_tgd_reaches_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    listener = _Listener()
    outside = tmp_path / "outside"
    payload = ESCAPE.replace("OUTSIDE", repr(str(outside))).replace("PORT", str(listener.port))

    @tg.op(trainable=True)
    def double(x: int) -> int:
        return 2 * x

    from tracegrad.testing import MockLLM

    try:
        double.code.add_feedback("return more")
        result = tg.TGD([double.code], engine=MockLLM(default=f"<new_value>{payload}</new_value>")).step()
        assert result.updated, result.events  # the rewrite passes the static check, as reported
        out = double(1).value
    finally:
        listener.close()
    text = json.dumps(out)
    assert SECRET not in text and "OPENAI_API_KEY" not in text
    # /proc/<ppid> inside the pid namespace is bwrap's own init, with the cleared environment:
    # the real parent is not visible at all (see the next test)
    assert out["environ"][0] == "refused" or "OPENAI" not in json.dumps(out["environ"])
    # /root holds nothing but the path down to the Python installation (bound read-only)
    from tracegrad.sandbox_bwrap import _python_dirs
    on_the_way = {Path(d).relative_to("/root").parts[0] for d in _python_dirs()
                  if d.startswith("/root/")}
    assert out["root"][0] == "refused" or set(out["root"][1]) <= on_the_way, out["root"]
    for key in ("subprocess", "write", "connect"):
        assert out[key][0] == "refused", (key, out[key])
    assert listener.accepted == 0
    assert not outside.exists()
    assert "OPENAI_API_KEY" not in json.dumps(out["own-env"])


@needs_bwrap
def test_the_sandbox_sees_no_parent_and_no_home() -> None:
    src = ("import os\ndef f():\n    return [os.getppid(), sorted(p for p in os.listdir('/proc') "
           "if p.isdigit()), os.path.exists(os.path.expanduser('~')), os.getuid()]\n")
    ppid, pids, home, uid = sandbox.run_function(src, "f")
    assert str(os.getpid()) not in pids and len(pids) <= 3, pids
    assert uid == 65534


def test_without_an_os_sandbox_code_is_refused_unless_opted_in(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sandbox, "os_sandbox_available", lambda: False)
    monkeypatch.delenv("TRACEGRAD_WEAK_SANDBOX", raising=False)
    monkeypatch.setattr(sandbox, "_weak_opt_in", False)
    monkeypatch.setattr(sandbox, "_announced", False)
    with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap"):
        sandbox.run_function("def f():\n    return 1\n", "f")

    @tg.op(trainable=True)
    def one() -> int:
        return 1

    one.code.value = "def one():\n    return 2\n"
    with pytest.raises(sandbox.SandboxUnavailable):  # not turned into feedback
        one()
    monkeypatch.setenv("TRACEGRAD_WEAK_SANDBOX", "1")
    assert one().value == 2
    assert "WITHOUT an OS sandbox" in capsys.readouterr().err


def test_a_cli_run_without_os_sandbox_says_how_to_install(tmp_path: Path) -> None:
    """A one-line message, not a traceback, when the process has no sandbox at all."""
    code = ("import tracegrad as tg, tracegrad.sandbox as s\n"
            "s.os_sandbox_available = lambda: False\n"
            "try:\n    s.run_function('def f():\\n    return 1\\n', 'f')\n"
            "except s.SandboxUnavailable as e:\n    print(e)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRACEGRAD_WEAK_SANDBOX"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=60, cwd=tmp_path)
    assert r.returncode == 0 and len(r.stdout.strip().splitlines()) == 1, r
    assert "bubblewrap" in r.stdout


def test_arguments_that_are_not_json_are_reported_at_the_first_call() -> None:
    @tg.op(trainable=True)
    def size(items) -> int:
        return len(items)

    with pytest.raises(TypeError, match="not JSON-serialisable"):
        size({1, 2})
    assert isinstance(ExecutionError, type)


def test_a_training_run_stops_on_a_missing_sandbox_instead_of_scoring_zeros(monkeypatch) -> None:
    """Scored as 0 on every example, a missing sandbox would look like a bad rewrite."""
    monkeypatch.setattr(sandbox, "os_sandbox_available", lambda: False)
    monkeypatch.delenv("TRACEGRAD_WEAK_SANDBOX", raising=False)
    monkeypatch.setattr(sandbox, "_weak_opt_in", False)

    @tg.op(trainable=True)
    def double(x: int) -> int:
        return 2 * x

    double.code.value = "def double(x):\n    return 3 * x\n"
    data = [{"x": 1, "answer": 2}, {"x": 2, "answer": 4}]
    with pytest.raises(sandbox.SandboxUnavailable):
        tg.evaluate(lambda x: double(x), data, lambda out, exp: float(out == exp),
                    input_fields=["x"], output_field="answer")
