"""benchmarks/search.py runs end to end at its --quick sizes and its helpers do what they say."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import assert_doctests_pass, load_benchmark


def test_the_helpers_doctests_pass() -> None:
    assert_doctests_pass(load_benchmark("search", "search_benchmark"), {"percentile": 1})


def test_a_quick_run_measures_every_mode(tmp_path: Path) -> None:
    out = tmp_path / "search.json"
    results = load_benchmark("search", "search_benchmark").main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text())["corpora"][0]["docs"] == 300
    indexing = results["indexing"]
    assert indexing["forward_rows"] == indexing["entries"] == 8  # one forward row per entry
    modes = {row["mode"]: row for row in results["corpora"][0]["modes"]}
    assert set(modes) == {
        "torch (baseline)",
        "exact",
        "dense",
        "two-stage:50",
        "two-stage:200",
        "binary:50",
        "muvera:50",
        "pool:2",
        "codec:binary",
    }
    assert modes["exact"]["overlap@10"] == 1.0
    assert 0 <= modes["exact"]["ndcg@10"] <= modes["exact"]["recall@10"]
    assert modes["codec:binary"]["bytes_per_token"] == 20
    assert all(row["p50_ms"] > 0 and 0 <= row["recall@10"] <= 1 for row in modes.values())
    assert 0 < modes["exact"]["share_of_memcpy"] < 1
