"""benchmarks/ingest_vectors.py, maxsim_kernel.py, scale.py, parquet_read.py and
ingest_pipeline.py run end to end at small sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import load_benchmark


def test_a_quick_ingest_run_writes_every_page_by_every_path(tmp_path: Path) -> None:
    out = tmp_path / "ingest.json"
    results = load_benchmark("ingest_vectors").main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text())["pages"] == 48  # the run asserts each index holds them all
    whole = "add_embeddings_file (whole file)"
    paths = {"raw write (baseline)", "add_vectors", "from-embeddings"}
    assert set(results["pages_per_s"]) == {*paths, whole}
    blocks = results["seconds_per_block"]
    assert all(len(blocks[p]) == 3 for p in paths) and len(blocks[whole]) == 1  # 48 pages, by 16
    assert results["whole_file_ratio_to_raw_write_total"] > 0
    assert results["ratio_to_raw_write_per_block_median"]["raw write (baseline)"] == 1.0


def test_a_quick_kernel_run_reports_gflops_beside_the_peak(tmp_path: Path) -> None:
    out = tmp_path / "kernel.json"
    results = load_benchmark("maxsim_kernel").main(["--quick", "--out", str(out)])
    assert [r["shape"] for r in json.loads(out.read_text())] == ["500x64", "200x16-112"]
    for row in results:  # the kernel was checked against the previous loop inside the run
        assert set(row["gflops"]) == {"peak", "kernel", "same-shape mm", "before"}
        assert all(rate > 0 for rate in row["gflops"].values())
        assert row["kernel_share_of_peak"] > 0


def test_a_quick_scale_run_builds_reopens_and_searches(tmp_path: Path) -> None:
    import torch

    from uniembed.core.scores import maxsim

    scale = load_benchmark("scale")
    queries = torch.nn.functional.normalize(torch.randn(3, 5, 128), dim=-1)
    docs = torch.nn.functional.normalize(torch.randn(7, 9, 128), dim=-1).half()
    truth = torch.stack([maxsim(query, docs) for query in queries])
    torch.testing.assert_close(scale.exact_scores(queries, docs), truth)  # the ground truth
    out = tmp_path / "scale.json"
    results = scale.main(["--quick", "--workdir", str(tmp_path), "--out", str(out)])
    assert json.loads(out.read_text())["docs"] == 400
    assert results["token_code_bytes"] == 400 * 16 * (256 + 20)  # float16 and binary codes
    assert 1 <= results["disk_after_close_over_codes"] < 3
    assert results["raw_write_mb_s"] > 0  # the disk's ceiling, measured beside the ingest
    ceiling = results["ingest_ceiling_docs_per_s"] * 16 * 276  # bytes/s of codes
    assert ceiling == pytest.approx(results["raw_write_mb_s"] * 1e6)
    modes = {row["mode"]: row for row in results["modes"]}
    assert modes["multivector"]["overlap@10"] == 1.0  # the scan is the exact MaxSim
    assert all(row["p50_ms"] > 0 and 0 <= row["recall@10"] <= 1 for row in modes.values())
    assert results["rss_after_open_mb"] > 0 and results["open_s"] > 0
    assert list(tmp_path.iterdir()) == [out]  # the index is removed


def test_a_quick_scale_run_through_a_parquet_file(tmp_path: Path) -> None:
    """--from-embeddings: the corpus written by `uniembed embed`'s writer, then ingested by
    Index.add_embeddings_file into int8 + binary codes; the exact top 10 is the same corpus's."""
    scale = load_benchmark("scale")
    args = ["--quick", "--from-embeddings", "--codecs", "int8", "binary"]
    results = scale.main([*args, "--workdir", str(tmp_path)])
    assert results["path"] == "Index.add_embeddings_file"
    assert results["token_code_bytes"] == 400 * 16 * (132 + 20)
    assert results["ingest_docs_per_s"] > 0 and results["raw_write_mb_s"] > 0
    assert 1 <= results["disk_after_close_over_codes"] < 3
    modes = {row["mode"]: row for row in results["modes"]}
    assert modes["multivector"]["overlap@10"] >= 0.9  # an int8 scan: within its bound of exact
    assert list(tmp_path.iterdir()) == []


def test_a_small_parquet_read_run_reads_every_page_each_way() -> None:
    results = load_benchmark("parquet_read").main(
        ["--pages", "328", "--tokens", "16", "--rounds", "1"]
    )
    assert len(results) == 5 and all(row["pages_per_s"] > 0 for row in results.values())


def test_a_small_ingest_pipeline_run_writes_every_page_every_way() -> None:
    """400 pages of 800 vectors: three writes, so the pipeline sends codes ahead (the run asserts
    that each index holds every page)."""
    rates = load_benchmark("ingest_pipeline").main(["--pages", "400", "--rounds", "1"])
    assert [len(r) for r in rates.values()] == [1, 1, 1]
    assert all(r[0] > 0 for r in rates.values())
