import os

import pytest

from tracegrad.sandbox import Limits, SandboxError, run_function

# how a refusal reads: the audit-hook guard says "not allowed"; under bubblewrap the kernel
# answers (the path does not exist in the sandbox, the file system is read-only, no network)
REFUSED = (r"not allowed|No such file|Read-only file system|Permission denied|"
           r"Operation not permitted|Network is unreachable|Name or service not known|"
           r"Temporary failure in name resolution|Cannot assign requested address|"
           r"Resource temporarily unavailable|Errno")


def test_returns_json_result():
    assert run_function("def f(a, b=1):\n    return [a, b]\n", "f", (2,), {"b": 3}) == [2, 3]


def test_child_cannot_read_parent_secrets(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-1234567890")
    src = "import os\ndef f():\n    return dict(os.environ)\n"
    env = run_function(src, "f")
    assert "OPENAI_API_KEY" not in env
    assert "sk-test-SECRET" not in repr(env)


def test_infinite_loop_is_stopped_by_the_timeout():
    with pytest.raises(SandboxError) as info:
        run_function("def f():\n    while True:\n        pass\n", "f", limits=Limits(timeout=1.0))
    assert info.value.kind == "timeout"


def test_exception_reports_line_and_code():
    src = "def f(x):\n    y = x + 1\n    return y / 0\n"
    with pytest.raises(SandboxError) as info:
        run_function(src, "f", (1,))
    assert info.value.line == 3 and "y / 0" in info.value.code
    assert "ZeroDivisionError" in str(info.value)


def test_writes_outside_the_sandbox_dir_are_refused(tmp_path):
    target = tmp_path / "pwned.txt"
    src = f"def f():\n    open({str(target)!r}, 'w').write('x')\n"
    with pytest.raises(SandboxError, match=REFUSED):
        run_function(src, "f")
    assert not target.exists()
    ok = "def f():\n    open('scratch.txt', 'w').write('x')\n    return open('scratch.txt').read()\n"
    assert run_function(ok, "f") == "x"


def test_network_and_subprocess_are_refused():
    src = "import socket\ndef f():\n    socket.create_connection(('127.0.0.1', 9))\n"
    with pytest.raises(SandboxError, match=REFUSED):
        run_function(src, "f")
    src = "import subprocess\ndef f():\n    subprocess.run(['true'])\n"
    with pytest.raises(SandboxError, match=REFUSED):
        run_function(src, "f")


def test_memory_limit():
    src = "def f():\n    x = bytearray(2 * 1024 * 1024 * 1024)\n    return len(x)\n"
    with pytest.raises(SandboxError) as info:
        run_function(src, "f", limits=Limits(memory_mb=256))
    assert info.value.kind in ("memory", "crash")


def test_parent_environment_untouched():
    before = dict(os.environ)
    run_function("def f():\n    return 1\n", "f")
    assert dict(os.environ) == before
