"""benchmarks/codecs.py runs end to end at a tiny size and reports what its table says."""

from __future__ import annotations

from tests.helpers import load_benchmark
from uniembed.core.codecs import CODEC_NAMES


def test_the_codecs_benchmark_reports_every_codec_at_both_thread_counts():
    script = load_benchmark("codecs", "codecs_benchmark")
    output = script.main(["--quick", "--shapes", "60x4-20", "--rounds", "1", "--sample", "512"])
    (result,) = output["synthetic"]
    assert result["docs"] == 60 and 60 <= result["rows"] <= 60 * 20
    for name in CODEC_NAMES:
        quality = result["quality"][name]
        assert quality["within_bound"], name
        for threads in (1, 2):
            ratios = result["ratios"][f"{name}/{threads}"]
            assert ratios["of_peak"] > 0 and ratios["vs_torch"] > 0
        assert result["ratios"][f"{name}/1"]["vs_float16"] > 0
    assert result["ratios"]["float16/1"]["vs_float16"] == 1.0
    sizes = {name: result["quality"][name]["bytes_per_token"] for name in CODEC_NAMES}
    assert sizes == {"float16": 256, "int8": 132, "binary": 20, "residual": 38}
