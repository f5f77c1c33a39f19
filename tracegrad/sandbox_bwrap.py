"""Build the bubblewrap command line that isolates LLM-written code, and probe that it works.

The kernel, not Python, is the boundary: the child gets new user, pid, ipc, uts, cgroup and
network namespaces (no network at all, not even loopback), sees only read-only system
directories and the Python installation, and can write only to an empty private /tmp. Its
environment is cleared, so no key of the parent's reaches it, and with its own pid namespace
it cannot see the parent in /proc.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

# system directories the interpreter may need; missing ones are skipped, symlinks recreated
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# the few files under /etc that libc and Python read; the rest (passwd, shadow, ...) stays hidden
_ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/nsswitch.conf")
_PROGRAM_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin")
SANDBOX_PATH = "/usr/bin:/bin"


def bwrap_binary() -> str | None:
    """The bwrap on PATH (or in /usr/bin, which a cleared PATH may miss), if any."""
    return shutil.which("bwrap") or (shutil.which("bwrap", path="/usr/bin:/bin"))


def _python_dirs() -> list[str]:
    """Where this interpreter lives: computed at run time, since the venv differs between a
    developer machine and CI (``.ci-venv`` inside the clone)."""
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    dirs.add(os.path.dirname(os.__file__))  # the stdlib, in case it lives elsewhere
    dirs.add(os.path.dirname(os.path.realpath(sys.executable)))
    real = {os.path.realpath(d) for d in dirs} | {os.path.abspath(d) for d in dirs}
    # bind the outermost directories only; nested binds would be redundant
    ordered = sorted(real, key=len)
    keep: list[str] = []
    for d in ordered:
        if not any(d == k or d.startswith(k.rstrip("/") + "/") for k in keep):
            keep.append(d)
    return keep


def _hide_programs() -> list[str]:
    """Empty the system's program directories except for the interpreter itself: even an exec
    that replaces the child (no fork needed) then finds no shell or tool to run."""
    exe = os.path.realpath(sys.executable)
    args: list[str] = []
    for d in _PROGRAM_DIRS:
        if os.path.isdir(d) and not os.path.islink(d):
            args += ["--tmpfs", d]
            if os.path.dirname(exe) == d:
                args += ["--ro-bind", exe, exe]
            args += ["--remount-ro", d]
    return args


def _fs_args() -> list[str]:
    args: list[str] = []
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    args += _hide_programs()
    for f in _ETC_FILES:
        args += ["--ro-bind-try", f, f]
    for d in _python_dirs():
        if not any(d == s or d.startswith(s + "/") for s in _SYSTEM_DIRS):
            args += ["--ro-bind", d, d]
    return args


def bwrap_command(python_argv: list[str], seccomp_fd: int | None = None) -> list[str]:
    """The full argv: bwrap, its isolation options, then the Python command to run inside.
    ``seccomp_fd`` (inherited by bwrap) holds a filter applied just before that command."""
    binary = bwrap_binary() or "bwrap"
    seccomp = ["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []
    return [
        binary, "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534",
        "--cap-drop", "ALL", "--die-with-parent", "--new-session",
        "--clearenv", "--setenv", "PATH", SANDBOX_PATH, "--setenv", "LANG", "C.UTF-8",
        "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
        # /tmp first: binds made after it stay visible when the venv lives under /tmp (a CI clone)
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
        *_fs_args(),
        "--chdir", "/tmp",
        *seccomp, "--", *python_argv,
    ]


@functools.lru_cache(maxsize=1)
def os_sandbox_available() -> bool:
    """Probe once per process: is bwrap installed and can it create the namespaces here?
    (Containers often forbid user namespaces; then bwrap exists but cannot run.)"""
    if sys.platform != "linux" or bwrap_binary() is None:
        return False
    cmd = bwrap_command([sys.executable, "-I", "-S", "-c", "print('ok')"])
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20,
                           env={"PATH": SANDBOX_PATH}, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0 and r.stdout.strip() == "ok"
