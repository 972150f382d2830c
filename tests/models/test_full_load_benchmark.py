"""benchmarks/full_load.py runs end to end at the tiny sizes and measures what it says."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import load_benchmark


@pytest.mark.parametrize("model", ["tiny", "v3-tiny"])
def test_a_tiny_load_is_measured(tmp_path: Path, model: str) -> None:
    rows = load_benchmark("full_load").main(
        ["--model", model, "--dir", str(tmp_path)]
        + ["--dtype", "float32", "--dtype", "bfloat16", "--dtype", "int8"]
    )
    float32, bfloat16, int8 = rows
    assert float32["weights"] > bfloat16["weights"] > 0
    assert float32["weights"] > int8["weights"] > 0  # packed int8 weights counted
    assert 0 < float32["before"] < float32["peak"]
    assert float32["on_disk"] == bfloat16["on_disk"] > 0
