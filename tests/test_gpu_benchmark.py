"""benchmarks/gpu.py: its workloads are what its table says, and the whole script runs (``--smoke``:
the mid size on the CPU, every section once)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def test_passages_hold_exactly_the_asked_token_counts(tiny_v4):
    script = load_benchmark("gpu", "gpu_benchmark")
    items = script.passages(tiny_v4, 6, 20, 40, seed=3)
    counts = [len(tiny_v4.tokenize(item.text).ids) for item in items]
    assert all(20 <= count <= 40 for count in counts)
    assert len(set(counts)) > 1  # lengths really vary


def test_pages_are_a4_renders():
    script = load_benchmark("gpu", "gpu_benchmark")
    (page,) = script.pages(1)
    assert page.image.size == script.A4_PAGE


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_smoke_run_prints_every_section():
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=880,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for workload in ("passages, 512 tokens", "passages, 128-512 tokens", "A4 pages"):
        assert workload in out
    assert '"failed": 0' in out  # the server section answered every request
    assert "cached" in out.split("training step:")[1]
