"""Helpers shared by several test areas: sample PNGs and PDFs, reading a bulk job's output, asking
a served model for embeddings, and importing a benchmark script and checking its doctests.

A plain module (not conftest) so tests can import it; the one home of these helpers.
"""

from __future__ import annotations

import doctest
import importlib.util
import io
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

Color = str | tuple[int, ...]


def png_bytes(
    color: Color | Image.Image = (10, 200, 30), size: tuple[int, int] = (8, 6), mode: str = "RGB"
) -> bytes:
    """A PNG of ``color`` over ``size`` pixels, or of ``color`` itself when it is an image.

    >>> Image.open(io.BytesIO(png_bytes("red", (3, 2)))).size
    (3, 2)
    """
    image = color if isinstance(color, Image.Image) else Image.new(mode, size, color)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def pdf_bytes(colors: list[Color], size: tuple[int, int] = (200, 100)) -> bytes:
    """A PDF whose page i is filled with ``colors[i]``; at resolution 72 a page is ``size`` points.

    >>> pdf_bytes(["red", (0, 0, 255)]).startswith(b"%PDF")
    True
    """
    pages = [Image.new("RGB", size, color) for color in colors]
    buffer = io.BytesIO()
    pages[0].save(buffer, "PDF", save_all=True, append_images=pages[1:], resolution=72.0)
    return buffer.getvalue()


def read_output(path: Path) -> tuple[list[str], list[np.ndarray]]:
    """(ids, vectors) of any output format."""
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        key = "embeddings" if rows and "embeddings" in rows[0] else "embedding"
        return [r["id"] for r in rows], [np.asarray(r[key], dtype=np.float32) for r in rows]
    if path.suffix == ".parquet":
        table = pq.read_table(path).to_pydict()
        if "embeddings" in table:  # float16 rows as bytes, `tokens` of them (docs/bulk.md)
            multi = zip(table["embeddings"], table["tokens"], strict=True)
            vectors = [np.frombuffer(v, "<f2").reshape(n, -1).astype(np.float32) for v, n in multi]
            return table["id"], vectors
        return table["id"], [np.asarray(v, dtype=np.float32) for v in table["embedding"]]
    ids = json.loads(path.with_suffix(".ids.json").read_text())
    return ids, list(np.load(path))


def assert_same_output(got: Path, want: Path) -> None:
    """The same ids and the same vectors, byte for byte."""
    got_ids, got_vectors = read_output(got)
    want_ids, want_vectors = read_output(want)
    assert got_ids == want_ids
    for a, b in zip(got_vectors, want_vectors, strict=True):
        assert a.dtype == np.float32 and a.tobytes() == b.tobytes()  # byte for byte


def embeddings(url: str, body: dict[str, Any]) -> list[np.ndarray]:
    """The vectors a server at ``url`` answers to an embeddings request ``body``."""
    response = httpx.post(f"{url}/v1/embeddings", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return [np.asarray(row["embedding"], dtype=np.float32) for row in response.json()["data"]]


def load_benchmark(script: str, name: str | None = None) -> ModuleType:
    """``benchmarks/<script>.py`` imported as module ``name`` (default: ``script``), registered in
    ``sys.modules`` as dataclasses and pickling need."""
    name = name or script
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{script}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def assert_doctests_pass(module: ModuleType, examples: dict[str, int]) -> None:
    """No doctest of ``module`` fails, and each function named in ``examples`` still holds at least
    that many examples: a doctest that vanishes fails this, as ``failed == 0`` alone would not."""
    found = {
        test.name.rsplit(".", 1)[-1]: len(test.examples)
        for test in doctest.DocTestFinder().find(module)
    }
    shrunk = {
        name: found.get(name, 0) for name, count in examples.items() if found.get(name, 0) < count
    }
    assert not shrunk, f"doctests gone or shrunk (examples left): {shrunk}"
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted >= sum(examples.values()), result
