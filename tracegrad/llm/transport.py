"""How the SDK's HTTP client is set up when tracegrad's own transport cannot be used.

tracegrad sends through :class:`~tracegrad.llm.http1.Http1Transport`; a proxy named in
the environment is honoured only by httpx's own transport, which then gets one pool
large enough to keep a whole batch's connections alive.
"""

from __future__ import annotations

import httpx2

__all__ = ["env_proxies", "one_pool"]

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
