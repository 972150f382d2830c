"""Helpers shared by several test areas: sample PNGs and PDFs, reading a bulk job's output, and
asking a served model for embeddings.

A plain module (not conftest) so tests can import it; the one home of these helpers.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
from PIL import Image

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
        key = "embeddings" if "embeddings" in table else "embedding"
        return table["id"], [np.asarray(v, dtype=np.float32) for v in table[key]]
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
