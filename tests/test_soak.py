"""The soak script runs end to end: a few seconds of mixed traffic against the real
``uniembed serve --index``, every kind of request answered, no 5xx, /health up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"


@pytest.mark.slow
def test_a_short_soak_answers_without_5xx(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    command = [sys.executable, str(SCRIPT), "--minutes", "0.4", "--baseline-minutes", "0.2"]
    completed = subprocess.run(
        [*command, "--clients", "3", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["server_errors_5xx"] == 0 and result["transport_errors"] == {}, result
    assert result["health"]["failed"] == 0 and result["health"]["ok"] > 10, result
    assert sum(result["answers"].values()) > 10, result
    assert all(key.endswith((" 200", " 0")) for key in result["answers"]), result
