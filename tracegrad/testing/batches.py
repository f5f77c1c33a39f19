"""The Files and Batches endpoints of :class:`~tracegrad.testing.FakeOpenAIServer`.

A batch client is only trustworthy if it has seen what a provider's batch does over
hours -- validating, in progress, finalising, expired with part of its lines done,
cancelled, lines failing one by one -- so this store plays all of it, in seconds: a batch
is ``validating`` until its first poll, then ``in_progress`` for ``delay`` seconds, then
its lines are answered by the same reply logic as the live endpoint, and output and error
files appear. Faults are queued with
:meth:`FakeBatches.fail_lines` and :meth:`FakeBatches.expire_next`.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["FakeBatches"]

Answer = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


def parse_multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a multipart/form-data body: name -> (filename, bytes)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in msg.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        fields[str(name)] = (part.get_filename(), payload)
    return fields


class FakeBatches:
    """Files and batches held in memory; thread-safe (handlers run on many threads)."""

    def __init__(self, answer: Answer, *, delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay  # seconds a batch stays in_progress
        self._lock = threading.Lock()
        self.files: dict[str, dict[str, Any]] = {}
        self._content: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._fail: list[int] = []  # HTTP status of the next failing lines
        self._expire: list[float] = []  # fraction of lines done when the next batch expires
        self.lines_answered = 0

    # -- scripting -----------------------------------------------------------------
    def fail_lines(self, n: int, status: int = 500) -> None:
        """Make the next ``n`` batch lines fail (in the error file) with ``status``."""
        with self._lock:
            self._fail.extend([status] * n)

    def expire_next(self, done_fraction: float = 0.5) -> None:
        """Make the next batch to finish expire with only ``done_fraction`` of its lines done."""
        with self._lock:
            self._expire.append(done_fraction)

    def release(self) -> None:
        """Let every batch in progress finish at its next poll (as if its delay had passed)."""
        with self._lock:
            for b in self.batches.values():
                b["_ready_at"] = 0.0

    @property
    def created(self) -> int:
        """How many batches were ever created."""
        with self._lock:
            return len(self.batches)

    # -- files -----------------------------------------------------------------------
    def add_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        with self._lock:
            fid = f"file-fake{len(self.files) + 1}"
            obj = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                   "filename": filename, "purpose": purpose, "status": "processed"}
            self.files[fid] = obj
            self._content[fid] = data
            return dict(obj)

    def content(self, fid: str) -> bytes | None:
        with self._lock:
            return self._content.get(fid)

    # -- batches ---------------------------------------------------------------------
    def create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        fid = body.get("input_file_id")
        data = self.content(str(fid))
        if data is None:
            return 400, _err(f"no such file: {fid}")
        n = sum(1 for line in data.splitlines() if line.strip())
        with self._lock:
            bid = f"batch_fake{len(self.batches) + 1}"
            now = time.time()
            self.batches[bid] = {
                "id": bid, "object": "batch", "endpoint": body.get("endpoint"),
                "input_file_id": fid, "completion_window": body.get("completion_window", "24h"),
                "status": "validating", "created_at": int(now), "in_progress_at": None,
                "output_file_id": None, "error_file_id": None, "errors": None,
                "metadata": body.get("metadata"),
                "request_counts": {"total": n, "completed": 0, "failed": 0},
                "_ready_at": now + self.delay,
            }
            return 200, _public(self.batches[bid])

    def retrieve(self, bid: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            b = self.batches.get(bid)
        if b is None:
            return 404, _err(f"no such batch: {bid}")
        self._advance(b)
        return 200, _public(b)

    def _advance(self, b: dict[str, Any]) -> None:
        """One step of a provider's life cycle per poll: validating -> in_progress ->
        (after ``delay``) finalizing -> completed or expired; cancelling -> cancelled."""
        now = time.time()
        with self._lock:
            status = b["status"]
            if status == "cancelling":
                b.update(status="cancelled", cancelled_at=int(now))
            elif status == "validating":
                b.update(status="in_progress", in_progress_at=int(now))
            elif status == "in_progress" and now >= b["_ready_at"]:
                b.update(status="finalizing", finalizing_at=int(now))
            elif status != "finalizing":
                return
        if b["status"] == "finalizing":
            self._finish(b)

    def cancel(self, bid: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            b = self.batches.get(bid)
            if b is None:
                return 404, _err(f"no such batch: {bid}")
            if b["status"] in ("validating", "in_progress", "finalizing"):
                b["status"] = "cancelling"
                b["cancelling_at"] = int(time.time())
            return 200, _public(b)

    def listing(self) -> dict[str, Any]:
        with self._lock:
            data = [_public(b) for b in reversed(list(self.batches.values()))]
        return {"object": "list", "data": data, "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None}

    def _finish(self, b: dict[str, Any]) -> None:
        """Answer the batch's lines (once, under the batch's own lock) and file the results."""
        with self._lock:
            if b.get("_finishing"):
                return
            b["_finishing"] = True
            expire = self._expire.pop(0) if self._expire else None
        lines = [json.loads(x) for x in (self.content(b["input_file_id"]) or b"").splitlines()
                 if x.strip()]
        stop = len(lines) if expire is None else int(len(lines) * expire)
        out, errs = [], []
        for i, line in enumerate(lines[:stop]):
            status, body = self._line(line)
            row = {"id": f"batch_req_{i}", "custom_id": line.get("custom_id"),
                   "response": {"status_code": status, "request_id": f"req_{i}", "body": body},
                   "error": None}
            (out if status == 200 else errs).append(json.dumps(row))
        for line in lines[stop:]:
            errs.append(json.dumps({"id": None, "custom_id": line.get("custom_id"),
                                    "response": None, "error": {
                                        "code": "batch_expired",
                                        "message": "This request could not be executed before "
                                        "the completion window expired."}}))
        counts = {"total": len(lines), "completed": len(out), "failed": len(errs)}
        out_id = self.add_file(_joined(out), f"{b['id']}_output.jsonl", "batch_output")["id"] \
            if out else None
        err_id = self.add_file(_joined(errs), f"{b['id']}_error.jsonl", "batch_output")["id"] \
            if errs else None
        with self._lock:
            b.update(status="expired" if expire is not None else "completed",
                     output_file_id=out_id, error_file_id=err_id, request_counts=counts,
                     completed_at=int(time.time()))

    def _line(self, line: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            failing = self._fail.pop(0) if self._fail else None
            self.lines_answered += 1
        if failing is not None:
            return failing, _err(f"fake line failure {failing}", "server_error")
        if line.get("url") != "/v1/chat/completions":
            return 400, _err(f"unsupported url {line.get('url')!r}")
        return self.answer(dict(line.get("body") or {}))


def _joined(rows: list[str]) -> bytes:
    return ("\n".join(rows) + "\n").encode()


def _public(b: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in b.items() if not k.startswith("_")}


def _err(message: str, type_: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": None}}
