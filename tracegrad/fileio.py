"""Writing files so that a crash at any moment leaves the old content or the new, never half.

One implementation for every file tracegrad replaces: prompt files and their backups, run
directories (config, state, best, report), the trimmed history on resume.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

MAX_PROMPT_FILE_BYTES = 2 * 1024 * 1024
"""Largest prompt file read (``TRACEGRAD_MAX_PROMPT_FILE_MB``): a template is instructions,
not data, and every later step (YAML, Jinja, estimate) is proportional to it."""

MAX_DATA_FILE_BYTES = 512 * 1024 * 1024
"""Largest dataset file read (``TRACEGRAD_MAX_DATA_FILE_MB``)."""


class InputFileError(ValueError):
    """A file that cannot be read as input: missing, not a regular file, too large."""


def _limit(default: int, env: str) -> int:
    raw = os.environ.get(env)
    if not raw:
        return default
    try:
        return max(1, int(float(raw) * 1024 * 1024))
    except ValueError:
        raise InputFileError(f"{env}={raw!r} is not a number of megabytes") from None


def read_input(path: str | os.PathLike[str], kind: str = "prompt") -> bytes:
    """The bytes of a user's input file, refusing what would hang or exhaust the process.

    A FIFO or ``/dev/zero`` never ends and a huge file takes minutes to parse, so only a
    regular file no larger than the limit for its ``kind`` ("prompt" or "data") is read; the
    size is checked from the open descriptor and the read is bounded, so a file that grows
    meanwhile is refused too.
    """
    cap = (_limit(MAX_PROMPT_FILE_BYTES, "TRACEGRAD_MAX_PROMPT_FILE_MB") if kind == "prompt"
           else _limit(MAX_DATA_FILE_BYTES, "TRACEGRAD_MAX_DATA_FILE_MB"))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise InputFileError("no such file") from None
    except IsADirectoryError:
        raise InputFileError("is a directory, not a file") from None
    except OSError as e:
        raise InputFileError(f"cannot read: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InputFileError("is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise InputFileError("is not a regular file (a FIFO, device or socket cannot be read)")
        if st.st_size > cap:
            raise InputFileError(f"is {st.st_size / 1e6:.1f} MB; at most {cap / 1e6:.1f} MB is "
                                 f"read (TRACEGRAD_MAX_{kind.upper()}_FILE_MB raises the limit)")
        chunks, size = [], 0
        while chunk := os.read(fd, min(1 << 20, cap + 1 - size) or 1):
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                raise InputFileError(f"grew past {cap / 1e6:.1f} MB while being read")
    finally:
        os.close(fd)
    data = b"".join(chunks)
    return data


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Replace ``path`` with ``data``: temp file in the same directory, fsync, os.replace.

    A reader sees the old file or the new one, never a half-written one; an existing
    file's permission bits are kept.
    """
    target = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory = target.parent if str(target.parent) else Path(".")
    try:
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    # a new file gets the usual umask permissions ("x" mode, not mkstemp's 0600); the
    # ".NAME.*.tmp" pattern is what a resumed run sweeps up after a kill
    tmp = directory / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
