"""benchmarks/search.py runs end to end at its --quick sizes and its helpers do what they say."""

from __future__ import annotations

import doctest
import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "search.py"


def load_script():
    spec = importlib.util.spec_from_file_location("search_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["search_benchmark"] = module
    spec.loader.exec_module(module)
    return module


def test_the_helpers_doctests_pass() -> None:
    result = doctest.testmod(load_script())
    assert result.attempted > 0 and result.failed == 0  # attempted: the doctests are still there


def test_a_quick_run_measures_every_mode(tmp_path: Path) -> None:
    out = tmp_path / "search.json"
    results = load_script().main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text())["corpora"][0]["docs"] == 300
    indexing = results["indexing"]
    assert indexing["forward_rows"] == indexing["entries"] == 8  # one forward row per entry
    modes = {row["mode"]: row for row in results["corpora"][0]["modes"]}
    assert set(modes) == {
        "torch (baseline)",
        "exact",
        "exact-qdrant",
        "dense",
        "two-stage:50",
        "two-stage:200",
        "binary:50",
        "pool:2",
    }
    assert modes["exact"]["overlap@10"] == 1.0 and modes["exact-qdrant"]["overlap@10"] >= 0.9
    assert all(row["p50_ms"] > 0 and 0 <= row["recall@10"] <= 1 for row in modes.values())
    assert 0 < modes["exact"]["share_of_memcpy"] < 1
