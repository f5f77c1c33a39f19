"""Writing files so that a crash at any moment leaves the old content or the new, never half.

One implementation for every file tracegrad replaces: prompt files and their backups, run
directories (config, state, best, report), the trimmed history on resume.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


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
