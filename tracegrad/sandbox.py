"""Run LLM-written code in a child process that cannot hurt the parent.

The boundary is the operating system: on Linux the child runs under bubblewrap
(``sandbox_bwrap``) with its own namespaces, no network, read-only system and Python
directories, an empty private /tmp, a cleared environment (so no API keys), and CPU-time,
memory, process and file-size limits plus a wall-clock timeout. Where no OS sandbox works,
LLM-written code is refused unless the user opts in to the weak mode (the audit-hook guard of
``sandbox_runner`` alone), which announces itself on stderr. Arguments and results cross the
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

from .sandbox_bwrap import bwrap_command, os_sandbox_available
from .sandbox_runner import RUNNER
from .sandbox_seccomp import seccomp_fd


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
    processes: int = 64


_WEAK_ENV = "TRACEGRAD_WEAK_SANDBOX"
_weak_opt_in = False
_announced = False
UNAVAILABLE = (
    "refusing to run LLM-written code: no OS sandbox (bubblewrap) works here; install it with "
    "`apt-get install bubblewrap`, or opt in to the weaker in-process guard with "
    "tracegrad.sandbox.allow_weak_sandbox(True) or TRACEGRAD_WEAK_SANDBOX=1"
)


class SandboxUnavailable(SandboxError):
    """No OS sandbox and no opt-in to the weak one: a setup problem, not feedback for the
    optimizer, so callers let it propagate instead of turning it into a gradient."""

    def __init__(self) -> None:
        super().__init__(UNAVAILABLE, kind="unavailable")


def allow_weak_sandbox(allow: bool = True) -> None:
    """Opt in (or out) to running LLM-written code under the audit-hook guard alone, which
    code in the child can switch off. Meant for machines where bwrap cannot run."""
    global _weak_opt_in
    _weak_opt_in = allow


def _weak_allowed() -> bool:
    return _weak_opt_in or os.environ.get(_WEAK_ENV, "").strip().lower() in ("1", "true", "yes")


def _announce_weak() -> None:
    """Never weaken silently: say so on stderr, once per process."""
    global _announced
    if not _announced:
        _announced = True
        print("tracegrad: WARNING: running LLM-written code WITHOUT an OS sandbox (weak "
              "in-process guard only, opted in); install bubblewrap for real isolation",
              file=sys.stderr)


def _child_argv() -> tuple[list[str], int | None]:
    """The command for the child (under bwrap when it works, else the weak mode if opted in)
    and the seccomp filter's descriptor it must inherit, if any."""
    python = [sys.executable, "-I", "-S", "-c", RUNNER]
    if os_sandbox_available():
        fd = seccomp_fd()
        return bwrap_command(python, fd), fd
    if not _weak_allowed():
        raise SandboxUnavailable()
    _announce_weak()
    return python, None


def _limit(limits: Limits):  # pragma: no cover - runs in the child
    """Limits set before exec, so bwrap and everything under it inherit them. The process
    limit is low: under the OS sandbox the child holds no capability in the parent's user
    namespace, so it cannot exceed it (bwrap itself, still privileged, may)."""

    def apply() -> None:
        import resource

        mem = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
        fs = limits.file_size_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (fs, fs))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
        os.setsid()

    return apply


def check_json_arguments(op_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Arguments must cross to the child as JSON; say so at the first call of the op rather
    than only after an optimizer has rewritten it."""
    named = [(f"argument {i + 1}", a) for i, a in enumerate(args)] + list(kwargs.items())
    for label, value in named:
        try:
            json.dumps(value)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"trainable op {op_name!r}: {label} ({type(value).__name__}) is not "
                f"JSON-serialisable, so a rewrite of it could not run in the sandbox: {e}"
            ) from None


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
    argv, filter_fd = _child_argv()
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
    with tempfile.TemporaryDirectory(prefix="tg-sandbox-") as tmp:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=tmp,
                env=env,
                preexec_fn=_limit(limits),
                pass_fds=() if filter_fd is None else (filter_fd,),
                text=True,
            )
        except OSError as e:
            raise SandboxError(f"could not start the sandbox: {e}") from None
        finally:
            if filter_fd is not None:
                os.close(filter_fd)
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
