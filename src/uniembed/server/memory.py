"""Give the memory of large requests back to the operating system (glibc's allocator).

Without this the process keeps its high-water mark: glibc raises its mmap threshold after the first
large buffer is freed (up to 32 MiB), so later decoded images, token tensors and response buffers
come from the heap, whose freed pages it keeps. Two measured remedies (docs/server.md, Memory):

* :func:`configure_allocator` fixes the mmap threshold at :data:`MMAP_THRESHOLD`, so every buffer
  that large is mapped on its own and unmapped when freed;
* :class:`MemoryReleaseMiddleware` calls ``malloc_trim(0)`` in a worker thread after a request has
  been answered (at most once per :data:`TRIM_INTERVAL` seconds), returning the free heap pages.

Both do nothing on a C library other than glibc (musl returns memory by itself).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD = 1024 * 1024  # buffers of at least this size are mapped on their own
TRIM_INTERVAL = 1.0  # seconds between two trims at most


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def configure_allocator() -> bool:
    """Fix glibc's mmap threshold (see the module); ``False`` without glibc."""
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def release_memory() -> bool:
    """Return free heap pages to the operating system; ``True`` when some were returned."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


class MemoryReleaseMiddleware:
    """Pure ASGI middleware: after a request is answered, :func:`release_memory` in a worker thread,
    at most once per ``interval`` seconds (a trim walks the heap: a few milliseconds)."""

    def __init__(self, app: ASGIApp, interval: float = TRIM_INTERVAL) -> None:
        self.app = app
        self.interval = interval
        self._last = 0.0
        self._running = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        if scope["type"] == "http" and scope["path"].startswith("/v1/") and self._due():
            self._running = True
            try:
                await anyio.to_thread.run_sync(release_memory)
            finally:
                self._last = time.monotonic()
                self._running = False

    def _due(self) -> bool:
        return not self._running and time.monotonic() - self._last >= self.interval
