"""The load-test script runs end to end (FakeModel, a few requests) and its helpers do what they
say."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import assert_doctests_pass, load_benchmark

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "loadtest.py"


def test_the_helpers_doctests_pass():
    examples = {
        "answered": 2,
        "parse_response_head": 1,
        "percentiles_ms": 1,
        "ratio_text": 1,
        "short_texts": 1,
    }
    assert_doctests_pass(load_benchmark("loadtest"), examples)


def test_a_short_run_measures_every_level_without_failures(tmp_path):
    out = tmp_path / "result.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--fake",
            "--requests",
            "12",
            "--rounds",
            "2",
            "--concurrency",
            "1,4",
            "--json",
            str(out),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    rows = json.loads(out.read_text())
    assert [(r["mode"], r["concurrency"]) for r in rows] == [
        ("library, one call", 1),
        ("library, per request", 1),
        ("server", 1),
        ("server", 4),
    ]
    for row in rows[2:]:
        assert row["failed"] == 0 and row["items"] == 24 and len(row["ratios"]) == 2
        assert row["batches"] >= 1 and row["items_per_s"] > 0
