"""Reading a safetensors file one tensor at a time with plain reads, converting each as it arrives.

safetensors' own reader maps the whole file into memory; every page it touches counts in the
process's resident memory while the file is open, so converting a bfloat16 checkpoint to float32
with it peaks at the float32 weights plus the whole bfloat16 file (1.5×). Read tensor by tensor into
its final tensor (a converted one through a small reused buffer, a chunk at a time), the peak is
the converted weights and that buffer (1.01× measured, tests/models/test_streaming.py). The format
is safetensors' documented one: an unsigned 64-bit little-endian header length, a JSON header (each
tensor's ``dtype``, ``shape`` and ``data_offsets`` into the byte buffer after the header, plus an
optional ``__metadata__``), then the buffer.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
CHUNK_BYTES = 4 * 2**20  # stored bytes converted at a time


def read_converted(file: Path, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` for every tensor of ``file``, floating-point ones converted to ``dtype``
    (others as stored). Raises ``ValueError`` naming what is malformed."""
    staging = torch.empty(CHUNK_BYTES, dtype=torch.uint8)  # reused for every converted tensor
    with open(file, "rb") as handle:
        header, start = _header(handle)
        for name, entry in header.items():
            if name != "__metadata__":
                stored, shape, begin, size = _entry(name, entry)
                handle.seek(start + begin)
                target = dtype if stored.is_floating_point else stored
                yield name, _read(handle, name, stored, target, shape, size, staging)


def _header(handle: BinaryIO) -> tuple[dict[str, Any], int]:
    raw = handle.read(8)
    if len(raw) != 8:
        raise ValueError("shorter than its 8-byte header length")
    (size,) = struct.unpack("<Q", raw)
    if size > MAX_HEADER_BYTES:
        raise ValueError(f"header of {size} bytes")
    header = json.loads(handle.read(size))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")  # noqa: TRY004 (a malformed file)
    return header, 8 + size


def _entry(name: str, entry: Any) -> tuple[torch.dtype, list[int], int, int]:
    """A header entry's dtype, shape, start in the buffer and size in bytes, checked."""
    try:
        stored = DTYPES[entry["dtype"]]
        shape = [int(n) for n in entry["shape"]]
        begin, end = (int(n) for n in entry["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"tensor {name!r}: malformed header entry {entry!r:.200}") from None
    size = math.prod(shape) * stored.itemsize
    if end - begin != size or begin < 0:
        raise ValueError(f"tensor {name!r}: {end - begin} bytes for shape {shape} of {stored}")
    return stored, shape, begin, size


def _read(
    handle: BinaryIO,
    name: str,
    stored: torch.dtype,
    target: torch.dtype,
    shape: list[int],
    size: int,
    staging: torch.Tensor,
) -> torch.Tensor:
    """One tensor read into its final (``target``) tensor; a converted one passes through
    ``staging`` a chunk at a time, so nothing but the result grows with the tensor."""
    out = torch.empty(shape, dtype=target)
    if stored == target:
        _fill(handle, name, out.view(-1).view(torch.uint8))
        return out
    flat = out.view(-1)
    step = staging.numel() // stored.itemsize
    for first in range(0, flat.numel(), step):
        count = min(step, flat.numel() - first)
        chunk = staging[: count * stored.itemsize]
        _fill(handle, name, chunk)
        flat[first : first + count].copy_(chunk.view(stored))
    return out


def _fill(handle: BinaryIO, name: str, target: torch.Tensor) -> None:
    if target.numel() and handle.readinto(memoryview(target.numpy())) != target.numel():
        raise ValueError(f"tensor {name!r}: the file ends inside it")
