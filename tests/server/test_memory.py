"""The server's allocator settings (uniembed.server.memory): memory goes back after a request
(tests/server/test_hostile.py measures that on the real server) without every forward pass paying
for fresh pages."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from uniembed.server.memory import MMAP_THRESHOLD, _glibc

# A forward pass's activations: allocated, written and freed on every batch. Run in a fresh process,
# since mallopt changes the whole process.
REUSE_PROBE = textwrap.dedent(
    """
    import resource, sys
    import torch
    from uniembed.server.memory import configure_allocator

    assert configure_allocator()
    size = int(sys.argv[1])

    def activation() -> None:
        torch.empty(size // 4, dtype=torch.float32).fill_(1.0)

    for _ in range(20):  # the heap grows to its working size over the first few
        activation()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        activation()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
    """
)


def page_faults_per_activation(size: int) -> float:
    result = subprocess.run(
        [sys.executable, "-c", REUSE_PROBE, str(size)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return float(result.stdout.strip())


@pytest.mark.skipif(_glibc() is None, reason="the allocator settings apply to glibc only")
def test_activation_sized_buffers_are_reused_not_faulted_in_afresh():
    """With the mmap threshold at 1 MiB every 4 MiB activation was mapped and unmapped: 1,024 page
    faults (fresh zeroed pages) each time, and the server at concurrency 64 ran at 0.72x the
    library; with only the mmap threshold raised, the trim threshold stuck at 128 KiB cost 992."""
    pages = 4 * 1024 * 1024 // 4096
    assert page_faults_per_activation(4 * 1024 * 1024) < 0.05 * pages
    # buffers from the threshold up are still mapped on their own, so they go back when freed
    assert page_faults_per_activation(MMAP_THRESHOLD) > 0.9 * MMAP_THRESHOLD // 4096
