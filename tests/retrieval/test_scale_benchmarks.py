"""benchmarks/ingest_vectors.py and benchmarks/maxsim_kernel.py run end to end at --quick sizes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import load_benchmark


def test_a_quick_ingest_run_writes_every_page_by_every_path(tmp_path: Path) -> None:
    out = tmp_path / "ingest.json"
    results = load_benchmark("ingest_vectors").main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text())["pages"] == 48  # the run asserts each index holds them all
    assert set(results["pages_per_s"]) == {"raw write (baseline)", "add_vectors", "from-embeddings"}
    assert all(len(s) == 3 for s in results["seconds_per_block"].values())  # 48 pages, blocks of 16
    assert results["ratio_to_raw_write_per_block_median"]["raw write (baseline)"] == 1.0


def test_a_quick_kernel_run_reports_gflops_beside_the_peak(tmp_path: Path) -> None:
    out = tmp_path / "kernel.json"
    results = load_benchmark("maxsim_kernel").main(["--quick", "--out", str(out)])
    assert [r["shape"] for r in json.loads(out.read_text())] == ["500x64", "200x16-112"]
    for row in results:  # the kernel was checked against the previous loop inside the run
        assert set(row["gflops"]) == {"peak", "kernel", "same-shape mm", "before"}
        assert all(rate > 0 for rate in row["gflops"].values())
        assert row["kernel_share_of_peak"] > 0
