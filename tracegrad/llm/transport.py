"""An HTTP transport of several small connection pools, for many calls in flight at once.

httpcore checks every idle connection of its pool (a socket probe each) whenever a request
starts or ends, so one pool of N connections costs O(N^2) probes per batch of N calls -- on
the one event loop that sends every call (:mod:`tracegrad.llm.loop`). Pools of at most
``_SHARD`` connections keep that linear. They share one SSL context, built once.
"""

from __future__ import annotations

from typing import Any

import httpx2

__all__ = ["ShardedTransport"]

_SHARD = 8  # connections per pool: httpcore scans all of a pool's connections per request


class ShardedTransport(httpx2.AsyncBaseTransport):
    """Connection pools of at most ``_SHARD`` connections, each request on the least busy.

    httpcore checks every idle connection of its pool (a socket probe each) whenever a
    request starts or ends, so with one pool of N connections a batch of N calls costs
    O(N^2) probes on the loop that sends every call. Small pools keep that linear.
    """

    def __init__(self, max_concurrency: int) -> None:
        n = max(1, -(-int(max_concurrency) // _SHARD))
        limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=_SHARD,
                               keepalive_expiry=5.0)
        ssl_context = httpx2.create_ssl_context()  # one for all pools: ~35 ms each to build
        self._pools = [httpx2.AsyncHTTPTransport(limits=limits, verify=ssl_context)
                       for _ in range(n)]
        self._busy = [0] * n

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        i = min(range(len(self._pools)), key=self._busy.__getitem__)
        self._busy[i] += 1
        try:
            response = await self._pools[i].handle_async_request(request)
        except BaseException:
            self._busy[i] -= 1
            raise
        # the connection stays taken until the body is read and the response closed
        stream = response.stream
        response.stream = _Release(stream, lambda: self._release(i))  # type: ignore[arg-type]
        return response

    def _release(self, i: int) -> None:
        self._busy[i] -= 1

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


class _Release(httpx2.AsyncByteStream):
    def __init__(self, inner: Any, done: Any) -> None:
        self._inner, self._done = inner, done

    async def __aiter__(self) -> Any:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            done, self._done = self._done, None
            if done is not None:
                done()


def env_proxies() -> bool:
    """Whether the environment names a proxy (``HTTPS_PROXY``...): httpx honours those only
    with its own transport, so then the SDK's single pool is kept (see :func:`one_pool`)."""
    import urllib.request

    return bool(urllib.request.getproxies())


def one_pool(max_concurrency: int) -> httpx2.Limits:
    """Limits of a single pool that keeps a whole batch's connections alive (the SDK's
    default keeps 100)."""
    keep = max(100, int(max_concurrency))
    return httpx2.Limits(max_connections=max(1000, keep), max_keepalive_connections=keep,
                         keepalive_expiry=5.0)
