"""Placeholder codecs (float16 only), replaced by the compiled codecs of branch ``codecs``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from uniembed.core.scores import maxsim_ragged


class Float16:
    name = "float16"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.bytes_per_token = 2 * dim

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(vectors, dtype=np.float16).view(np.uint8)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(codes).view(np.float16).astype(np.float32)

    def maxsim(self, query: np.ndarray, codes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        rows = torch.from_numpy(np.asarray(codes).view(np.float16))
        lengths = torch.from_numpy(np.diff(offsets))
        return maxsim_ragged(torch.from_numpy(query), rows, lengths).numpy()

    def state(self) -> dict[str, Any]:
        return {}


class Binary(Float16):
    name = "binary"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.bytes_per_token = dim // 8

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        return np.packbits(vectors > 0, axis=1)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        bits = np.unpackbits(np.asarray(codes), axis=1)[:, : self.dim]
        return (2.0 * bits - 1.0).astype(np.float32) / np.sqrt(self.dim)

    def maxsim(self, query: np.ndarray, codes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        rows = torch.from_numpy(self.decode(codes))
        lengths = torch.from_numpy(np.diff(offsets))
        return maxsim_ragged(torch.from_numpy(query), rows, lengths).numpy()


Codec = Float16
CODECS = {"float16": Float16, "binary": Binary}


def make_codec(name: str, dim: int, sample: np.ndarray | None = None) -> Float16:
    return CODECS[name](dim)


def load_codec(name: str, dim: int, state: dict[str, Any]) -> Float16:
    return CODECS[name](dim)
