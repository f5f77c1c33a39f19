"""LLM-written code and templates are untrusted.

Code: a rewritten trainable function runs only in the sandboxed child (tracegrad.sandbox):
no key from the parent's environment (not through os.environ, not through
/proc/<parent>/environ, not from a .env file), no change to the file system outside its
temp directory (by any of the calls that change files, not only open()), no network, no
new processes, no signals to other processes. Templates: rendered in Jinja2's sandbox; attribute tricks are
refused with a clear error -- through a prompt file too, before any call -- and a template
cannot build a gigabyte string or compute a huge power.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

import tracegrad as tg
from tracegrad import template
from tracegrad.ops.python import ExecutionError
from tracegrad.promptfile import PromptFile, PromptFileError
from tracegrad.sandbox import Limits, SandboxError, run_function

from .reliability_harness import SECRET, cli_env, copy_counting, has_traceback, run_cli

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX sandbox")

# how a refusal reads: the audit-hook guard says "not allowed"; under bubblewrap the kernel
# answers (the path does not exist in the sandbox, the file system is read-only, no network)
REFUSED = (r"not allowed|No such file|Read-only file system|Permission denied|"
           r"Operation not permitted|Network is unreachable|Name or service not known|"
           r"Temporary failure in name resolution|Cannot assign requested address|"
           r"Resource temporarily unavailable|Errno")


# -- secrets ----------------------------------------------------------------------------------

_PARENT = textwrap.dedent('''
    import json, sys
    from tracegrad.sandbox import run_function, SandboxError
    probes = {
        "environ": "import os\\ndef f():\\n    return dict(os.environ)\\n",
        "proc-parent-environ": "import os\\ndef f():\\n    return open(f'/proc/{os.getppid()}/environ', 'rb').read().decode('latin-1')\\n",
        "proc-parent-cmdline": "import os\\ndef f():\\n    return open(f'/proc/{os.getppid()}/cmdline', 'rb').read().decode('latin-1')\\n",
        "proc-walk": "import os\\ndef f():\\n    out = []\\n    for p in os.listdir('/proc'):\\n        if p.isdigit():\\n            try:\\n                out.append(open('/proc/' + p + '/environ', 'rb').read().decode('latin-1'))\\n            except OSError as e:\\n                out.append(str(e))\\n    return out\\n",
    }
    out = {}
    for name, src in probes.items():
        try:
            out[name] = ["ran", run_function(src, "f")]
        except SandboxError as e:
            out[name] = ["refused", str(e)]
    print(json.dumps(out))
''')


@posix_only
def test_a_key_in_the_parents_environment_cannot_be_read_by_the_child(tmp_path: Path) -> None:
    """The parent is a real process whose environment (as the kernel shows it in
    /proc/PID/environ) holds the key, as when a user exports OPENAI_API_KEY."""
    env = {**os.environ, "OPENAI_API_KEY": SECRET, "MY_SERVICE_TOKEN": SECRET + "-token"}
    r = subprocess.run([sys.executable, "-c", _PARENT], env=env, capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout)
    assert SECRET not in r.stdout, {k: v[0] for k, v in results.items()}
    assert results["environ"][0] == "ran" and "OPENAI_API_KEY" not in results["environ"][1]
    assert results["proc-parent-environ"][0] == "refused"
    assert re.search(REFUSED, results["proc-parent-environ"][1])


def test_key_files_beside_the_project_cannot_be_read(tmp_path: Path) -> None:
    """A project's .env (or ~/.netrc) holds the same key as the environment."""
    env_file = tmp_path / ".env"
    env_file.write_text(f"OPENAI_API_KEY={SECRET}\n")
    for src in (f"def f():\n    return open({str(env_file)!r}).read()\n",
                f"import pathlib\ndef f():\n    return pathlib.Path({str(env_file)!r}).read_text()\n",
                f"import os\ndef f():\n    fd = os.open({str(env_file)!r}, os.O_RDONLY)\n"
                "    return os.read(fd, 100).decode()\n"):
        with pytest.raises(SandboxError, match=REFUSED) as info:
            run_function(src, "f")
        assert SECRET not in str(info.value)


def test_a_rewritten_trainable_function_runs_only_in_the_sandbox(tmp_path: Path,
                                                                 monkeypatch) -> None:
    """As if an optimizer (or a loaded run directory) had installed a hostile rewrite."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)

    @tg.op(trainable=True)
    def add_one(x: int) -> int:
        return x + 1

    assert add_one(1).value == 2  # the original runs in-process
    add_one.code.value = "import os\ndef add_one(x):\n    return dict(os.environ)\n"
    leaked = add_one(1).value  # the rewrite runs in the child
    assert SECRET not in json.dumps(leaked) and "OPENAI_API_KEY" not in leaked

    home_target = Path.home() / f"tracegrad-sandbox-probe-{uuid.uuid4().hex}"
    targets = [tmp_path / "pwned.txt", home_target]
    try:
        for target in targets:
            add_one.code.value = (f"def add_one(x):\n    open({str(target)!r}, 'w').write('x')\n"
                                  "    return 1\n")
            with pytest.raises(ExecutionError) as info:
                add_one(1)
            assert re.search(REFUSED, str(info.value)) and "line 2" in str(info.value)
            assert not target.exists()
        add_one.code.value = ("import os\ndef add_one(x):\n"
                              "    os.system('touch ' + os.path.expanduser('~/pwned'))\n")
        with pytest.raises(ExecutionError, match=REFUSED):
            add_one(1)
    finally:
        home_target.unlink(missing_ok=True)


def test_tgd_refuses_a_code_rewrite_that_reaches_for_os(monkeypatch) -> None:
    """The static check stops such a rewrite before it is ever applied; the old code stays
    and the refusal is recorded."""
    from tracegrad.testing import MockLLM

    @tg.op(trainable=True)
    def double(x: int) -> int:
        return 2 * x

    hostile = ("<new_value>\nimport os\ndef double(x):\n    os.environ['X'] = '1'\n"
               "    return open('/etc/passwd').read()\n</new_value>")
    engine = MockLLM(default=hostile)
    code = double.code
    before = code.value
    code.add_feedback("return more")
    result = tg.TGD([code], engine=engine).step()
    assert code.value == before and not result.updated
    text = json.dumps(result.events)
    assert "os" in text and ("allowed" in text or "import" in text), result.events


_ESCAPES = {
    "os.open-write": "import os\ndef f(t):\n    fd = os.open(t + '/x', os.O_WRONLY | os.O_CREAT)\n    os.write(fd, b'x')\n",
    "mkdir": "import os\ndef f(t):\n    os.mkdir(t + '/x')\n",
    "sibling-prefix-dir": "import os\ndef f(t):\n    open(os.getcwd() + 'x', 'w').write('x')\n",
    "rename-out": "import os\ndef f(t):\n    open('a', 'w').write('x')\n    os.rename('a', t + '/x')\n",
    "replace-out": "import os\ndef f(t):\n    open('a', 'w').write('x')\n    os.replace('a', t + '/x')\n",
    "hard-link": "import os\ndef f(t):\n    os.link(t + '/victim', 'l')\n    open('l', 'w').write('x')\n",
    "symlink-write": "import os\ndef f(t):\n    os.symlink(t + '/victim', 's')\n    open('s', 'w').write('x')\n",
    "truncate": "import os\ndef f(t):\n    os.truncate(t + '/victim', 0)\n",
    "chmod": "import os\ndef f(t):\n    os.chmod(t + '/victim', 0o777)\n",
    "utime": "import os\ndef f(t):\n    os.utime(t + '/victim', (0, 0))\n",
    "remove": "import os\ndef f(t):\n    os.remove(t + '/victim')\n",
    "chdir-then-write": "import os\ndef f(t):\n    os.chdir(t)\n    open('x', 'w').write('x')\n",
    "shutil-copy": "import shutil\ndef f(t):\n    shutil.copy(t + '/victim', t + '/x')\n",
}


@posix_only
@pytest.mark.parametrize("name", sorted(_ESCAPES))
def test_no_change_to_the_file_system_outside_the_temp_dir(tmp_path: Path, name: str) -> None:
    victim = tmp_path / "victim"
    victim.write_text("original")
    mode = victim.stat().st_mode
    mtime = victim.stat().st_mtime
    with pytest.raises(SandboxError, match=REFUSED):
        run_function(_ESCAPES[name], "f", (str(tmp_path),))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim"]
    assert not Path(str(Path.cwd()) + "x").exists()
    assert victim.read_text() == "original" and victim.stat().st_mode == mode
    assert victim.stat().st_mtime == mtime


_OUTSIDE_WORLD = {
    "udp-sendto": "import socket\ndef f():\n    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    s.sendto(b'k', ('127.0.0.1', 9))\n",
    "dns-lookup": "import socket\ndef f():\n    return socket.getaddrinfo('example.com', 80)\n",
    "tcp-connect": "import socket\ndef f():\n    socket.create_connection(('127.0.0.1', 9))\n",
    "posixsubprocess": "def f():\n    import _posixsubprocess\n    return 1\n",
    "subprocess": "import subprocess\ndef f():\n    subprocess.run(['true'])\n",
    "os-system": "import os\ndef f():\n    os.system('true')\n",
    "fork": "import os\ndef f():\n    return os.fork()\n",
    "ctypes": "def f():\n    import ctypes\n    return 1\n",
    "signal-parent-group": "import os\ndef f():\n    os.killpg(os.getpgid(os.getppid()), 0)\n",
    "signal-parent": "import os\ndef f():\n    os.kill(os.getppid(), 0)\n",
}


@posix_only
@pytest.mark.parametrize("name", sorted(_OUTSIDE_WORLD))
def test_no_network_no_processes_no_signals(name: str) -> None:
    with pytest.raises(SandboxError, match=REFUSED):
        run_function(_OUTSIDE_WORLD[name], "f")


def test_ordinary_code_still_works_in_the_sandbox() -> None:
    src = ("import json, math, re, tempfile\ndef f(x):\n    open('scratch.txt', 'w').write('hi')\n"
           "    fd, name = tempfile.mkstemp()\n    import os\n    os.close(fd)\n"
           "    os.remove(name)\n    os.mkdir('d')\n    os.rename('scratch.txt', 'd/s.txt')\n"
           "    return [math.sqrt(x), re.sub('a', 'b', 'aa'), open('d/s.txt').read(),"
           " json.dumps({'a': 1})]\n")
    assert run_function(src, "f", (4,)) == [2.0, "bb", "hi", '{"a": 1}']


def test_memory_and_time_limits_hold_for_a_trainable_rewrite() -> None:
    @tg.op(trainable=True, limits=Limits(timeout=1.0, memory_mb=200))
    def work(n: int) -> int:
        return n

    work.code.value = "def work(n):\n    x = bytearray(1024 * 1024 * 1024)\n    return len(x)\n"
    with pytest.raises(ExecutionError, match="MemoryError|crash"):
        work(1)
    work.code.value = "def work(n):\n    while True:\n        n += 1\n"
    with pytest.raises(ExecutionError, match="timed out"):
        work(1)


# -- templates ----------------------------------------------------------------------------------

ESCAPES = [
    "{{ question.__class__ }}",
    "{{ question.__class__.__mro__[1].__subclasses__() }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ cycler.__init__.__globals__.os.environ }}",
    "{{ question['__class__'] }}",
    "{{ question|attr('__class__') }}",
    "{{ (question|attr('__class__')).__base__ }}",
    "{% for c in ''.__class__.__mro__ %}{{ c }}{% endfor %}",
]


@pytest.mark.parametrize("tpl", ESCAPES)
def test_template_escapes_fail_with_a_clear_error(tpl: str) -> None:
    with pytest.raises(template.TemplateError, match="sandbox"):
        template.render(tpl, {"question": "q"})


@pytest.mark.parametrize("tpl", [t for t in ESCAPES if "attr(" not in t])
def test_a_prompt_file_with_an_escape_is_refused_at_load_with_its_line(tmp_path: Path,
                                                                       tpl: str) -> None:
    p = tmp_path / "evil.prompt"
    p.write_text(f"---\ninput: [question]\noutput: answer\n---\nAnswer the question.\n\n{tpl}\n")
    with pytest.raises(PromptFileError) as info:
        PromptFile.load(p)
    assert f"{p}:7:" in str(info.value) and "sandbox" in str(info.value)


def test_cli_refuses_an_escaping_prompt_file_before_any_call(tmp_path: Path) -> None:
    from .reliability_harness import optimize_args, world_server

    task = copy_counting(tmp_path / "task")
    text = task["prompt"].read_text().replace(
        "{{ question }}", "{{ question }} {{ cycler.__init__.__globals__.os.environ }}")
    task["prompt"].write_text(text)
    with world_server() as (server, _):
        r = run_cli(optimize_args(task, server.url, tmp_path / "run"), cli_env(tmp_path))
        assert server.request_count == 0
    assert r.code == 2, r
    line = text.splitlines().index(next(x for x in text.splitlines() if "cycler" in x)) + 1
    assert f"{task['prompt']}:{line}:" in " ".join(r.stderr.split())
    assert "sandbox" in r.stderr and not has_traceback(r.output)
    assert task["prompt"].read_text() == text
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("tpl", [
    "{{ question * 1000000000 }}",
    "{{ 'ab' * 10**9 }}",
    "{{ [question] * 10**8 }}",
    "{{ 9 ** (9 ** 9) }}",
    "{% for i in range(10**9) %}x{% endfor %}",
    "{{ 1 / 0 }}",
])
def test_a_template_cannot_exhaust_memory_or_time(tpl: str) -> None:
    import time

    t0 = time.perf_counter()
    with pytest.raises(template.TemplateError):
        template.render(tpl, {"question": "q"})
    assert time.perf_counter() - t0 < 2.0


def test_ordinary_template_arithmetic_still_works() -> None:
    assert template.render("{{ '-' * 3 }}{{ 2 ** 10 }}{{ n * 2 }}", {"n": 4}) == "---10248"
