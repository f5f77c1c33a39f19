"""A deadline for the whole of one HTTP request, not only for each wait on the network.

httpx's timeouts bound each network operation: a server that sends one byte a second
never trips a 2 s read timeout, and such a call ran past 150 s. The deadline of the
request running in this thread is kept in a context variable; a network backend wrapped
around httpcore2's own caps the timeout of every connect, read and write by the time
left, and fails with httpcore2's timeout errors once it is spent. So httpx, the openai
client and :class:`~tracegrad.llm.OpenAIEngine` handle it like any other timeout, and
the half-read connection is closed rather than returned to the pool. Requests that run
outside :func:`deadline` (other code sharing the client) are not affected.

The async engine does not need this: cancelling a task (``asyncio.timeout``) interrupts
whatever it waits on.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

import httpcore2

__all__ = ["deadline", "install_deadline"]

_DEADLINE: ContextVar[float | None] = ContextVar("tracegrad_request_deadline", default=None)


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Requests made in this block must finish within ``seconds`` in total (None: no bound)."""
    if seconds is None:
        yield
        return
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _bounded(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` capped by the time left before the deadline; ``error`` once none is left."""
    end = _DEADLINE.get()
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise error("the request's total deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore2.NetworkStream):
    """A connection whose every read and write respects the current request's deadline."""

    def __init__(self, inner: httpcore2.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore2.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, httpcore2.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore2.NetworkStream:
        bounded = _bounded(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore2.NetworkBackend):
    """Opens connections within the deadline and hands out :class:`_DeadlineStream` s."""

    def __init__(self, inner: httpcore2.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore2.NetworkStream:
        bounded = _bounded(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_tcp(host, port, bounded, local_address,
                                                       socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None
                            ) -> httpcore2.NetworkStream:
        bounded = _bounded(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def install_deadline(client: Any) -> bool:
    """Make every connection pool of the sync httpx2 ``client`` honour :func:`deadline`.

    httpx2 has no public hook for the network backend, so this reaches into the client's
    transports (``_transport`` and the proxy ``_mounts``) and their pools; it must run
    before the client opens a connection. Returns False, changing nothing, when a
    transport is not built that way (a custom transport): the caller can then say that
    requests on it are bounded per read only.
    """
    transports = [getattr(client, "_transport", None),
                  *(getattr(client, "_mounts", None) or {}).values()]
    pools = [getattr(t, "_pool", None) for t in transports if t is not None]
    if not pools or any(not hasattr(p, "_network_backend") for p in pools):
        return False
    for pool in pools:
        if not isinstance(pool._network_backend, _DeadlineBackend):
            pool._network_backend = _DeadlineBackend(pool._network_backend)
    return True
