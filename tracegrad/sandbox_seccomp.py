"""A tiny seccomp filter for the bwrap child: no new processes.

Running as root (as CI does), RLIMIT_NPROC does not apply, so the kernel must refuse process
creation itself. The filter refuses fork, vfork, clone without CLONE_THREAD (threads keep
working) and answers clone3 with ENOSYS so libc falls back to clone, where the flags can be
checked. It is a classic-BPF program as bwrap's ``--seccomp FD`` expects; it is built here
rather than with libseccomp so no extra dependency is needed.
"""

from __future__ import annotations

import os
import platform
import struct

_LD_W_ABS, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_EPERM, _ENOSYS = 1, 38
_CLONE_THREAD = 0x00010000
# machine -> (audit arch, syscall numbers that only create processes, clone, clone3)
_ARCHES = {
    "x86_64": (0xC000003E, (57, 58), 56, 435),
    "aarch64": (0xC00000B7, (), 220, 435),
}


def _program(arch: int, forks: tuple[int, ...], clone: int, clone3: int) -> list[tuple]:
    """Instructions as (code, jump-if-true label, jump-if-false label, k); labels resolve to
    offsets in ``_assemble``. seccomp_data: nr at 0, arch at 4, args[0] at 16."""
    prog: list[tuple] = [
        (_LD_W_ABS, None, None, 4),
        (_JEQ_K, None, "deny", arch),
        (_LD_W_ABS, None, None, 0),
        (_JEQ_K, "clone", None, clone),
        (_JEQ_K, "nosys", None, clone3),
    ]
    prog += [(_JEQ_K, "deny", None, nr) for nr in forks]
    if arch == 0xC000003E:
        prog.append((_JGE_K, "deny", None, 0x40000000))  # the x32 ABI's aliases
    prog += [
        (_RET_K, None, None, _ALLOW),
        ("clone", _LD_W_ABS, None, None, 16),
        (_JSET_K, "allow", "deny", _CLONE_THREAD),
        ("allow", _RET_K, None, None, _ALLOW),
        ("deny", _RET_K, None, None, _ERRNO | _EPERM),
        ("nosys", _RET_K, None, None, _ERRNO | _ENOSYS),
    ]
    return prog


def _assemble(prog: list[tuple]) -> bytes:
    labels: dict[str, int] = {}
    plain: list[tuple] = []
    for i, ins in enumerate(prog):
        if isinstance(ins[0], str):
            labels[ins[0]] = i
            ins = ins[1:]
        plain.append(ins)
    out = b""
    for i, (code, jt, jf, k) in enumerate(plain):
        t = labels[jt] - i - 1 if jt else 0
        f = labels[jf] - i - 1 if jf else 0
        out += struct.pack("=HBBI", code, t, f, k)
    return out


def seccomp_program() -> bytes | None:
    """The compiled filter for this machine, or None where the syscall table is unknown."""
    spec = _ARCHES.get(platform.machine())
    return _assemble(_program(*spec)) if spec else None


def seccomp_fd() -> int | None:
    """A readable pipe holding the filter, for ``bwrap --seccomp FD`` (the caller closes it
    after starting bwrap). The program is a few hundred bytes, far below a pipe's buffer."""
    prog = seccomp_program()
    if prog is None:
        return None
    r, w = os.pipe()
    os.write(w, prog)
    os.close(w)
    return r
