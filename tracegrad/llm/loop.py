"""One event loop per process on which every HTTP call of the OpenAI engine runs.

An async HTTP pool belongs to the event loop that opened it. Building a client per caller's
loop meant a new ``AsyncOpenAI`` (and a new SSL context, ~35 ms) for every ``asyncio.run``,
and a second, sync client for the calls made from threads (backward, optimizer steps,
threaded evaluation), whose SDK work then competed for the GIL thread by thread. Instead,
one daemon thread runs one loop for the life of the process: each engine builds its single
``AsyncOpenAI`` there once, and every call -- from a worker thread or from a coroutine on
any other loop -- is handed to that loop. That is the one way tracegrad issues concurrent
HTTP calls, and a connection opened by one caller is reused by the next.

Cancellation crosses the hand-over both ways: a caller's task that is cancelled (or a
thread interrupted by Ctrl-C) cancels the call on the shared loop, so nothing keeps
calling the server for a caller that has gone.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["SharedLoop", "shared_loop"]

T = TypeVar("T")


class SharedLoop:
    """A daemon thread running one asyncio loop; started on first use, again after fork()."""

    def __init__(self, name: str = "tracegrad-http") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    # -- lifecycle -----------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running shared loop (started now if needed)."""
        loop = self._loop
        if loop is not None and self._pid == os.getpid():
            return loop
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                # after fork() the parent's thread does not exist here: start our own
                self._start()
            return self._loop  # type: ignore[return-value]

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                loop.close()

        thread = threading.Thread(target=run, name=self._name, daemon=True)
        thread.start()
        ready.wait()
        self._loop, self._thread, self._pid = loop, thread, os.getpid()

    def close(self, timeout: float = 1.0) -> None:
        """Let what is still running on the loop (a client closing its pool) finish, up to
        ``timeout`` seconds, and stop the loop. Runs at exit; idempotent."""
        with self._lock:
            loop = self._loop
            if loop is None or self._pid != os.getpid() or loop.is_closed():
                return
            self._loop = None

        async def drain() -> None:
            me = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not me]
            if pending:
                await asyncio.wait(pending, timeout=timeout)

        try:
            asyncio.run_coroutine_threadsafe(drain(), loop).result(timeout + 1)
        except Exception:  # noqa: BLE001 - a hung close must not hang the exit
            pass
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout)

    def accepts(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether work may still be scheduled on ``loop``: it is this process's shared
        loop and :meth:`close` has not begun (work queued after that would be dropped
        unrun when the loop closes, with a "never awaited" warning)."""
        return self._loop is loop and self._pid == os.getpid() and loop.is_running()

    # -- running -------------------------------------------------------------------
    def in_loop(self) -> bool:
        """Whether the caller already runs on the shared loop."""
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the shared loop and wait for it here (a thread without a loop)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:  # Ctrl-C in this thread: stop the call on the loop too
            future.cancel()
            raise

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` from any loop; it runs on the shared loop."""
        if self.in_loop():
            return await coro
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.wrap_future(future)  # cancelling the caller cancels the call


_SHARED = SharedLoop()
atexit.register(_SHARED.close)


def shared_loop() -> SharedLoop:
    """The process's shared HTTP loop."""
    return _SHARED
