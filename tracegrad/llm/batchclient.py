"""One round of a batched evaluation against the provider: build, upload, submit, poll,
download, map back.

Every step goes through the journal first (:mod:`.batchjournal`): a part is written to
disk before it is uploaded, its file id recorded before the batch is created, its batch
id recorded before the first poll. So a run killed anywhere is resumed without a second
batch. The budget reserves each round's worst case at batch prices before anything is
submitted. Output and error files are streamed line by line, never held whole.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..redaction import collect_secrets, find_secret
from .base import LLMError, Request, RetryableError
from .batchjournal import FINISHED_STATES, OPEN_STATES

__all__ = ["BatchClient", "BatchCancelled"]

ENDPOINT = "/v1/chat/completions"
_API_ATTEMPTS = 5


class BatchCancelled(LLMError):
    """A batch of this run was cancelled (``tracegrad batch cancel``): the run stops."""


class BatchClient:
    """Resolves a set of requests of one engine and one model through provider batches."""

    def __init__(self, provider: Any, scope: Any, model: str | None = None) -> None:
        self.provider = provider
        self.scope = scope
        self.journal = scope.journal
        self.options = scope.options
        self.model = model or str(provider.model)  # every request here is for this model
        self.withheld: set[str] = set()  # requests holding a secret: live, never written

    # -- provider calls ------------------------------------------------------------
    def api(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(...)`` on the SDK client; transient failures retried with backoff."""
        for attempt in range(1, _API_ATTEMPTS + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - mapped to our own errors here
                err = self.provider.map_error(e)
                if not isinstance(err, RetryableError) or attempt == _API_ATTEMPTS:
                    raise err from None
                time.sleep(err.retry_after if err.retry_after is not None else 0.5 * 2 ** attempt)
        raise AssertionError("unreachable")

    # -- one round -----------------------------------------------------------------
    def resolve(self, requests: dict[str, Request], meters: dict[str, Any]
                ) -> tuple[dict[str, Any], dict[str, str]]:
        """Answer bodies and failure messages, by request key, for ``requests``."""
        handles = _reserve(requests, meters)
        try:
            parts = self._parts(requests)
            self._drive(parts)
            answers: dict[str, Any] = {}
            failed: dict[str, str] = {}
            for part in parts:
                self._collect(part, requests, answers, failed)
        finally:
            for meter, handle in handles:
                meter.release_batch(handle)
        for key in requests:
            if key not in answers and key not in failed and key not in self.withheld:
                failed[key] = "no result line for this request"
        return answers, failed

    def _parts(self, requests: dict[str, Request]) -> list[dict[str, Any]]:
        """Parts of the journal that already hold these requests, then new parts for the rest."""
        wanted = set(requests)
        parts = []
        for part in self.journal.usable(wanted, self.model):
            if part["name"] in self.scope.seen_parts:
                continue  # downloaded already in this process: its failures are failures
            parts.append(part)
            wanted -= self.journal.keys(part)
            self.scope.report["resumed_parts"] += 1
            where = part.get("batch_id") or "not yet submitted"
            self.options.say(f"batch: resuming {part['name']} ({where}, {part['status']})")
        for keys, lines in self._chunks([k for k in requests if k in wanted], requests):
            url = getattr(self.provider, "display_url", "")
            parts.append(self.journal.new_part(self.model, url, keys, lines))
            self.scope.report["lines"] += len(keys)
        return parts

    def _chunks(self, keys: list[str], requests: dict[str, Request]
                ) -> Iterator[tuple[list[str], list[str]]]:
        """The input lines, split at the provider's line and size limits."""
        o = self.options
        secrets = collect_secrets(self.provider)
        chunk_keys: list[str] = []
        chunk: list[str] = []
        size = 0
        for key in keys:
            line = json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT,
                               "body": self.provider.batch_body(requests[key])},
                              ensure_ascii=False)
            if find_secret(line, secrets) is not None:  # the run dir keeps every line
                self.withheld.add(key)
                self.scope.live.add(key)
                self.scope.report["withheld_secret"] += 1
                continue
            n = len(line.encode()) + 1
            if chunk and (len(chunk) >= o.max_lines or size + n > o.max_bytes):
                yield chunk_keys, chunk
                chunk_keys, chunk, size = [], [], 0
            chunk_keys.append(key)
            chunk.append(line)
            size += n
        if chunk:
            yield chunk_keys, chunk

    # -- submit and wait -----------------------------------------------------------
    def _submit(self, part: dict[str, Any]) -> None:
        client = self.provider.client
        if part["status"] == "prepared":
            data = self.journal.input_bytes(part)
            f = self.api(client.files.create, file=(f"{part['name']}.jsonl", data),
                         purpose="batch")
            self.journal.update(part, status="uploaded", input_file_id=f.id)
        if part["status"] == "uploaded":
            batch_id = self._existing_batch(part["input_file_id"])
            if batch_id is None:
                b = self.api(client.batches.create, input_file_id=part["input_file_id"],
                             endpoint=ENDPOINT, completion_window=self.options.completion_window,
                             metadata={"tracegrad_part": part["name"]})
                batch_id = b.id
                self.scope.report["batches_submitted"] += 1
            self.journal.update(part, status="submitted", batch_id=batch_id)
            self.options.say(f"batch: submitted {part['name']} as {batch_id} "
                             f"({part['lines']} requests)")

    def _existing_batch(self, file_id: str) -> str | None:
        """A batch the provider already made of ``file_id`` (killed after creating it)."""
        page = self.api(self.provider.client.batches.list, limit=100)
        for b in getattr(page, "data", None) or []:
            if getattr(b, "input_file_id", None) == file_id:
                return str(b.id)
        return None

    def _drive(self, parts: list[dict[str, Any]]) -> None:
        """Submit what is not yet submitted; poll with backoff until every part finished."""
        o = self.options
        for part in parts:
            self._submit(part)
        interval = o.poll_interval
        started = time.monotonic()
        while True:
            waiting = [p for p in parts if p["status"] in OPEN_STATES]
            for part in waiting:
                self._poll(part)
            waiting = [p for p in parts if p["status"] in OPEN_STATES]
            if not waiting:
                return
            if o.max_wait is not None and time.monotonic() - started > o.max_wait:
                ids = ", ".join(str(p.get("batch_id")) for p in waiting)
                raise LLMError(f"batches {ids} did not finish within {o.max_wait:g}s; they "
                               "keep running: rerun the same command to pick them up")
            time.sleep(interval)
            interval = min(interval * 1.5, o.max_poll_interval)

    def _poll(self, part: dict[str, Any]) -> None:
        b = self.api(self.provider.client.batches.retrieve, part["batch_id"])
        counts = getattr(b, "request_counts", None)
        done = f"{counts.completed}/{counts.total}" if counts is not None else "?"
        if b.status in FINISHED_STATES or b.status == "failed":
            errors = getattr(getattr(b, "errors", None), "data", None) or []
            why = "; ".join(str(getattr(e, "message", e)) for e in errors)[:300]
            self.journal.update(part, status=b.status, output_file_id=b.output_file_id,
                                error_file_id=b.error_file_id, errors=why or None)
            self.scope.report["expired" if b.status == "expired" else b.status] += 1
            self.options.say(f"batch: {part['batch_id']} {b.status} ({done} done)")
        elif b.status in ("cancelled", "cancelling"):
            self.journal.update(part, status="cancelled")
            raise BatchCancelled(f"batch {part['batch_id']} was cancelled; run the command "
                                 "again to submit its requests anew")
        elif part.get("last_seen") != b.status:
            part["last_seen"] = b.status
            self.options.say(f"batch: {part['batch_id']} {b.status} ({done} done)")

    # -- results -------------------------------------------------------------------
    def _collect(self, part: dict[str, Any], requests: dict[str, Request],
                 answers: dict[str, Any], failed: dict[str, str]) -> None:
        """Map a finished part's output and error lines back by ``custom_id``."""
        self.scope.seen_parts.add(part["name"])
        if part["status"] == "failed":
            for key in self.journal.keys(part) & set(requests):
                failed[key] = f"batch {part['batch_id']} failed: {part.get('errors')}"
            return
        for fid in (part.get("output_file_id"), part.get("error_file_id")):
            if not fid:
                continue
            try:
                self._map_lines(fid, requests, answers, failed)
            except Exception as e:  # noqa: BLE001 - a file gone or a stream cut: retried
                why = self.provider.map_error(e) if not isinstance(e, LLMError) else e
                for key in self.journal.keys(part) & set(requests):
                    if key not in answers:
                        failed[key] = f"could not download {fid}: {why}"

    def _map_lines(self, fid: str, requests: dict[str, Request], answers: dict[str, Any],
                   failed: dict[str, str]) -> None:
        """Each line of file ``fid`` as an answer or a failure of its request."""
        for row in self._lines(fid):
            key = row.get("custom_id")
            if key not in requests:
                continue
            resp = row.get("response") or {}
            if resp.get("status_code") == 200 and not row.get("error"):
                answers[key] = resp.get("body")
                failed.pop(key, None)
            elif key not in answers:
                failed[key] = _line_error(row)

    def _lines(self, file_id: str) -> Iterator[dict[str, Any]]:
        """The rows of a provider file, streamed (a 10,000-line output is never held)."""
        stream = self.provider.client.files.with_streaming_response.content
        with self.api(stream, file_id) as resp:
            for line in resp.iter_lines():
                if line.strip():
                    try:
                        yield json.loads(line)
                    except ValueError:
                        continue  # a broken line: its request has no result, and is retried


def _line_error(row: dict[str, Any]) -> str:
    err = row.get("error")
    if isinstance(err, dict):
        return f"{err.get('code')}: {err.get('message')}"
    resp = row.get("response") or {}
    body = resp.get("body") or {}
    msg = body.get("error", {}).get("message") if isinstance(body, dict) else None
    return f"HTTP {resp.get('status_code')}: {msg}"


def _reserve(requests: dict[str, Request], meters: dict[str, Any]) -> list[tuple[Any, Any]]:
    """Book the round's worst case at batch prices in each meter (BudgetExceeded if not)."""
    by_meter: dict[int, tuple[Any, list[Request]]] = {}
    for key, request in requests.items():
        meter = meters.get(key)
        if meter is not None and callable(getattr(meter, "reserve_batch", None)):
            by_meter.setdefault(id(meter), (meter, []))[1].append(request)
    handles: list[tuple[Any, Any]] = []
    try:
        for meter, reqs in by_meter.values():
            handles.append((meter, meter.reserve_batch(reqs)))
    except BaseException:
        for meter, handle in handles:
            meter.release_batch(handle)
        raise
    return handles
