"""Give the memory of large requests back to the operating system (glibc's allocator).

Without this the process keeps its high-water mark: glibc raises its mmap threshold after the first
large buffer is freed (up to 32 MiB), so later decoded images, token tensors and response buffers
come from the heap, whose freed pages it keeps. Two measured remedies (docs/server.md, Memory):

* :func:`configure_allocator` fixes the mmap threshold at :data:`MMAP_THRESHOLD` (glibc's own
  ceiling), so it never moves: buffers that large are mapped on their own and unmapped when freed
  (and the trim threshold, which glibc then stops moving, at what it would have made it);
* :class:`MemoryReleaseMiddleware` calls ``malloc_trim(0)`` in a worker thread after a request has
  been answered (at most once per :data:`TRIM_INTERVAL` seconds), returning the free heap pages.

The threshold is not lower on purpose: a forward pass allocates and frees its activations, a few
MiB each, on every batch; mapped, each one comes back as fresh pages to fault and zero, which made
the server at concurrency 64 run at 0.72x the library (1 MiB) against 0.92x (32 MiB). The price,
for a 10-page request: a peak ~75 MB higher and 41 MB kept instead of 14 (docs/server.md, Memory).

Both do nothing on a C library other than glibc (musl returns memory by itself).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # buffers of at least this size are mapped on their own
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # free() keeps this much at the heap's top (glibc's own rule)
TRIM_INTERVAL = 1.0  # seconds between two trims at most


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def configure_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds (see the module); ``False`` without glibc.

    Fixing the mmap threshold also stops glibc from moving the trim threshold with it, which would
    then stay at 128 KiB: every free at the heap's top would hand pages back for the next batch to
    fault in again. So it is set to what glibc itself would have made it.
    """
    libc = _glibc()
    return (
        libc is not None
        and bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
        and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    )


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
