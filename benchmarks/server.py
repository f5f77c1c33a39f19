"""The benchmark server: tracegrad's FakeOpenAIServer plus a timestamped request log.

Every framework in a run talks to one instance of this server over real HTTP on
127.0.0.1. The server sleeps a fixed ``latency`` per request (a model's response time),
answers with :func:`replies.reply` and reports ``usage`` in every reply. Its log -- one
entry per request: arrival and reply time, kind, prompt and completion tokens, whether it
was a repair -- is the only source of the numbers in RESULTS.md: no framework's own
counters are used.

Token counts are the server's own (``tracegrad.llm.base.estimate_tokens``: about four
characters per token, plus four per message), the same rule for every framework. The log
is checked against the usage the server put in its replies (:meth:`BenchServer.verify`).

Run standalone to point a framework at it by hand::

    python benchmarks/server.py --latency 0.2
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import replies  # noqa: E402

from tracegrad.llm.base import content_to_text, estimate_tokens  # noqa: E402
from tracegrad.testing import FakeOpenAIServer  # noqa: E402


def prompt_tokens(body: dict[str, Any]) -> int:
    return sum(estimate_tokens(content_to_text(m.get("content"))) + 4
               for m in body.get("messages") or [])


class _Server(FakeOpenAIServer):
    """FakeOpenAIServer that stamps each request body with its arrival time."""

    def _record(self, body: dict[str, Any], headers: Any) -> None:  # type: ignore[override]
        super()._record(body, headers)
        body["_bench_arrival"] = time.time()


class BenchServer:
    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.log: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = _Server(self._reply, latency=latency, model="bench-model")

    def _reply(self, body: dict[str, Any]) -> str:
        now = time.time()
        text = replies.reply(body)
        _, _, repair = replies.split(body)
        entry = {
            "arrival": body.get("_bench_arrival", now - self.latency),
            "done": now,
            "kind": replies.classify(body),
            "repair": repair,
            "prompt_tokens": prompt_tokens(body),
            "completion_tokens": estimate_tokens(text),
            "json_mode": bool(body.get("response_format")),
        }
        with self._lock:
            self.log.append(entry)
        return text

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> BenchServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> BenchServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self._server.url

    def set_latency(self, latency: float) -> None:
        self.latency = latency
        self._server.latency = latency

    # -- the log -----------------------------------------------------------------------
    def entries(self, t0: float, t1: float) -> list[dict[str, Any]]:
        """Requests answered within the wall-clock window [t0, t1]."""
        with self._lock:
            return [e for e in self.log if t0 <= e["done"] <= t1]

    def verify(self) -> dict[str, int]:
        """Compare the log with the usage the server sent; they must agree exactly."""
        responses = self._server.responses
        with self._lock:
            logged = (sum(e["prompt_tokens"] for e in self.log),
                      sum(e["completion_tokens"] for e in self.log), len(self.log))
        sent = (sum(r["usage"]["prompt_tokens"] for r in responses),
                sum(r["usage"]["completion_tokens"] for r in responses), len(responses))
        if logged != sent:
            raise AssertionError(f"server log {logged} disagrees with the usage sent {sent}")
        return {"requests": logged[2], "prompt_tokens": logged[0], "completion_tokens": logged[1]}


def summarize(entries: list[dict[str, Any]]) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for e in entries:
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
    return {
        "calls": len(entries),
        "prompt_tokens": sum(e["prompt_tokens"] for e in entries),
        "completion_tokens": sum(e["completion_tokens"] for e in entries),
        "repairs": sum(1 for e in entries if e["repair"]),
        "unknown": kinds.get("unknown", 0),
        "kinds": kinds,
        "depth": sequential_depth(entries),
    }


def sequential_depth(entries: list[dict[str, Any]]) -> int:
    """Longest chain of requests where each arrived after the previous one was answered.

    With a fixed latency this is the number of latency periods the step waited for: the
    critical path the framework actually took (compare with the workload's limit).
    """
    if not entries:
        return 0
    order = sorted(entries, key=lambda e: e["arrival"])
    best: list[int] = []
    for i, e in enumerate(order):
        prev = [best[j] for j in range(i) if order[j]["done"] <= e["arrival"] + 1e-4]
        best.append(1 + max(prev, default=0))
    return max(best)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency", type=float, default=0.2)
    args = ap.parse_args()
    with BenchServer(args.latency) as s:
        print(s.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
