"""The load-test script runs end to end (FakeModel, a few requests) and its helpers do what they
say."""

from __future__ import annotations

import doctest
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "loadtest.py"


def load_script():
    spec = importlib.util.spec_from_file_location("loadtest", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["loadtest"] = module
    spec.loader.exec_module(module)
    return module


def test_the_helpers_doctests_pass():
    result = doctest.testmod(load_script())
    assert result.attempted > 0 and result.failed == 0  # attempted: the doctests are still there


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
