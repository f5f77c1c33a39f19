"""The batch journal: which provider batches a run submitted, written as soon as ids exist.

A batch outlives the process that submitted it (it runs for up to a day on the
provider's fleet). So every id -- the uploaded input file, the batch, its output and
error files -- is written to ``RUN_DIR/batches/journal.json`` the moment the provider
returns it, atomically, before anything else happens. A run killed at any point is
resumed by reading the journal: a part whose batch exists is polled, never submitted
again; a part uploaded but not yet submitted is looked for among the provider's batches
before it is submitted. Each part keeps its input (``part-NNNN.jsonl``) and its request
keys (``part-NNNN.keys``, one per line) beside the journal.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..fileio import atomic_write

__all__ = ["BatchJournal", "JOURNAL_NAME", "OPEN_STATES", "FINISHED_STATES"]

JOURNAL_NAME = "journal.json"
OPEN_STATES = ("prepared", "uploaded", "submitted")
"""Parts whose batch may still deliver: resumed rather than resubmitted."""
FINISHED_STATES = ("completed", "expired")
"""Parts whose files can be downloaded (an expired batch keeps the lines it finished)."""


class BatchJournal:
    """The parts of one run (in memory when ``directory`` is None: nothing to resume)."""

    def __init__(self, directory: str | Path | None) -> None:
        self.dir = Path(directory) / "batches" if directory is not None else None
        self._lock = threading.Lock()
        self.parts: list[dict[str, Any]] = []
        self._keys: dict[str, frozenset[str]] = {}
        if self.dir is not None and (self.dir / JOURNAL_NAME).exists():
            self.parts = self._read()

    def _read(self) -> list[dict[str, Any]]:
        assert self.dir is not None
        path = self.dir / JOURNAL_NAME
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a batch journal ({e})") from None
        parts = data.get("parts") if isinstance(data, dict) else None
        if not isinstance(parts, list):
            raise ValueError(f"{path}: not a batch journal (no list of parts)")
        return [p for p in parts if isinstance(p, dict) and isinstance(p.get("name"), str)]

    def save(self) -> None:
        if self.dir is None:
            return
        with self._lock:
            text = json.dumps({"version": 1, "parts": self.parts}, indent=2)
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.dir / JOURNAL_NAME, text + "\n")

    # -- parts -------------------------------------------------------------------
    def new_part(self, model: str, base_url: str, keys: list[str], lines: Iterable[str]) -> dict:
        """Record a part (its input written first), state "prepared"; returns its entry."""
        with self._lock:
            name = f"part-{len(self.parts) + 1:04d}"
        part: dict[str, Any] = {"name": name, "model": model, "base_url": base_url,
                                "lines": len(keys), "status": "prepared",
                                "created_at": time.time()}
        self._keys[name] = frozenset(keys)
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.dir / f"{name}.jsonl", "".join(f"{x}\n" for x in lines))
            atomic_write(self.dir / f"{name}.keys", "".join(f"{k}\n" for k in keys))
        else:
            part["_data"] = "".join(f"{x}\n" for x in lines)
        with self._lock:
            self.parts.append(part)
        self.save()
        return part

    def update(self, part: dict[str, Any], **fields: Any) -> None:
        """Set ``fields`` on ``part`` and write the journal at once."""
        with self._lock:
            part.update(fields)
        self.save()

    def input_bytes(self, part: dict[str, Any]) -> bytes:
        if self.dir is None:
            return str(part["_data"]).encode()
        return (self.dir / f"{part['name']}.jsonl").read_bytes()

    def keys(self, part: dict[str, Any]) -> frozenset[str]:
        name = part["name"]
        if name not in self._keys:
            path = self.dir / f"{name}.keys" if self.dir is not None else None
            text = path.read_text("utf-8") if path is not None and path.exists() else ""
            self._keys[name] = frozenset(k for k in text.split() if k)
        return self._keys[name]

    def usable(self, wanted: set[str], model: str) -> Iterator[dict[str, Any]]:
        """Parts of ``model`` that are open or finished and hold some of ``wanted``."""
        for part in list(self.parts):
            ok = part.get("status") in OPEN_STATES + FINISHED_STATES and part.get("model") == model
            if ok and wanted & self.keys(part):
                yield part

    def open_parts(self) -> list[dict[str, Any]]:
        return [p for p in self.parts if p.get("status") in OPEN_STATES]
