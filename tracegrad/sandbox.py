"""Run LLM-written code in a child process that cannot hurt the parent.

The child gets: a fresh temp directory as its working directory, an environment with no
inherited variables (so no API keys), CPU-time, memory and file-size limits, a wall-clock
timeout, and an audit hook that refuses writes outside its temp directory, reads outside it
(except Python's own library), sockets, and new processes. Arguments and results cross the
boundary as JSON only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any


class SandboxError(Exception):
    """The code raised, timed out, ran out of memory, or returned something not JSON-able."""

    def __init__(self, message: str, *, line: int | None = None, code: str = "", kind: str = "error"):
        super().__init__(message)
        self.line = line
        self.code = code
        self.kind = kind

    def describe(self) -> str:
        where = f" at line {self.line}: `{self.code.strip()}`" if self.line else ""
        return f"{self} {where}".strip()


@dataclass
class Limits:
    timeout: float = 5.0
    memory_mb: int = 512
    cpu_seconds: int = 10
    file_size_mb: int = 16


_RUNNER = r'''
import json, sys, os, traceback, builtins
data = json.loads(sys.stdin.read())
root = os.path.realpath(os.getcwd())
me = str(os.getpid())
FILENAME = "<trainable:" + data["name"] + ">"
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# events that change the file system -> which arguments are paths that must stay inside root
_CHANGES = {"os.remove": (0,), "os.rmdir": (0,), "shutil.rmtree": (0,), "os.mkdir": (0,),
            "os.rename": (0, 1), "os.link": (0, 1), "os.symlink": (1,), "os.truncate": (0,),
            "os.chmod": (0,), "os.chown": (0,), "os.utime": (0,), "os.chflags": (0,),
            "os.setxattr": (0,), "os.removexattr": (0,)}
_DENIED = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.fork",
           "os.forkpty", "os.spawn", "os.kill", "os.killpg", "os.startfile", "ctypes.dlopen",
           "ctypes.dlsym", "ctypes.call_function", "signal.pthread_kill"}
# modules whose only use here is to escape: spawning without an audit event, raw memory
_NO_IMPORT = {"_posixsubprocess", "_ctypes", "ctypes", "_multiprocessing", "multiprocessing"}
def _inside(p):
    if isinstance(p, int):
        return False  # a change through a file descriptor: cannot be checked, refuse it
    try:
        p = os.fsdecode(os.fspath(p))
    except TypeError:
        return False
    rp = os.path.realpath(p)
    return rp == root or rp.startswith(root + os.sep)
# what may be read besides the sandbox directory: the interpreter's own library (imports,
# tracebacks), a few devices, time zones, this process's /proc. Not the user's files: a
# project's .env or ~/.netrc holds API keys just like the parent's environment does.
_READABLE = tuple(sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix,
                   sys.exec_prefix, sys.base_exec_prefix)} | {"/usr/share/zoneinfo",
                   "/dev/null", "/dev/urandom", "/dev/zero", "/proc/" + me}))
def _readable(p):
    try:
        rp = os.path.realpath(os.fsdecode(os.fspath(p)))
    except TypeError:
        return False
    return rp == root or rp.startswith(root + os.sep) or any(
        rp == r or rp.startswith(r + os.sep) for r in _READABLE)
def _hook(event, args):
    if event == "open":
        path = args[0]
        mode = args[1] if len(args) > 1 else None
        flags = args[2] if len(args) > 2 else 0
        if isinstance(path, int):
            return
        write = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and bool(flags & _WRITE))
        if write and not _inside(path):
            raise PermissionError("sandbox: writing outside the sandbox directory is not allowed")
        if not write and not _readable(path):
            raise PermissionError("sandbox: reading files outside the sandbox directory is not allowed")
    elif event in _CHANGES:
        for i in _CHANGES[event]:
            if i < len(args) and not _inside(args[i]):
                raise PermissionError("sandbox: " + event + " outside the sandbox directory is not allowed")
    elif event in _DENIED or event.startswith("socket."):
        raise PermissionError("sandbox: " + event + " is not allowed")
    elif event == "import" and args and str(args[0]).split(".")[0] in _NO_IMPORT:
        raise PermissionError("sandbox: importing " + str(args[0]) + " is not allowed")
out = sys.stdout
sys.stdout = sys.stderr
try:
    ns = {"__name__": "__sandbox__"}
    code = compile(data["source"], FILENAME, "exec")
    sys.addaudithook(_hook)
    exec(code, ns)
    fn = ns[data["name"]]
    value = fn(*data["args"], **data["kwargs"])
    try:
        payload = json.dumps({"ok": True, "value": value})
    except (TypeError, ValueError):
        payload = json.dumps({"ok": False, "error": "TypeError: return value is not JSON-serialisable: " + repr(value)[:200], "line": None, "code": ""})
except BaseException as e:
    line, text = None, ""
    for fr in traceback.extract_tb(e.__traceback__):
        if fr.filename == FILENAME:
            line = fr.lineno
    if line is None and isinstance(e, SyntaxError):
        line = e.lineno
    if line:
        lines = data["source"].splitlines()
        text = lines[line - 1] if 0 < line <= len(lines) else ""
    payload = json.dumps({"ok": False, "error": type(e).__name__ + ": " + str(e)[:500], "line": line, "code": text})
out.write(payload)
out.flush()
'''


def _limit(limits: Limits):  # pragma: no cover - runs in the child
    def apply() -> None:
        import resource

        mem = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
        fs = limits.file_size_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (fs, fs))
        os.setsid()

    return apply


def run_function(
    source: str,
    func_name: str,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    limits: Limits | None = None,
) -> Any:
    """Define ``func_name`` from ``source`` in a sandboxed child, call it, return its result."""
    limits = limits or Limits()
    try:
        payload = json.dumps(
            {"source": source, "name": func_name, "args": list(args), "kwargs": kwargs or {}}
        )
    except (TypeError, ValueError) as e:
        raise SandboxError(f"arguments must be JSON-serialisable to run in the sandbox: {e}") from None
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
    with tempfile.TemporaryDirectory(prefix="tg-sandbox-") as tmp:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _RUNNER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=tmp,
                env=env,
                preexec_fn=_limit(limits),
                text=True,
            )
        except OSError as e:
            raise SandboxError(f"could not start the sandbox: {e}") from None
        try:
            out, err = proc.communicate(payload, timeout=limits.timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.communicate()
            raise SandboxError(
                f"timed out after {limits.timeout:g} s (an infinite loop or too much work?)",
                kind="timeout",
            ) from None
    if not out.strip():
        tail = (err or "").strip().splitlines()[-1:] or ["no output"]
        kind = "memory" if "MemoryError" in (err or "") else "crash"
        raise SandboxError(
            f"the code crashed (exit status {proc.returncode}): {tail[0][:300]}", kind=kind
        )
    try:
        result = json.loads(out)
    except json.JSONDecodeError:
        raise SandboxError(f"the sandbox returned unreadable output: {out[:200]!r}") from None
    if not result.get("ok"):
        err_text = result.get("error", "error")
        kind = "memory" if err_text.startswith("MemoryError") else "exception"
        raise SandboxError(err_text, line=result.get("line"), code=result.get("code") or "", kind=kind)
    return result["value"]
