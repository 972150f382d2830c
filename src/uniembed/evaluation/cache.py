"""Encodings cached on disk, so that other settings (and an interrupted run) cost no forward pass.

An entry is a folder named by the digest of its :class:`CacheKey` — the model's identity (name,
family, :meth:`~uniembed.embedder.Embedder.weights_digest`), the task, the encode options and the
items' fingerprint — holding ``manifest.json`` and numbered chunk files. Each file is written
under a temporary name and renamed when complete, so a killed run leaves whole chunks only and the
next run encodes just the missing ones.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uniembed.core.files import atomic_path, write_text
from uniembed.errors import InvalidInput
from uniembed.evaluation.encoded import Encodings

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$UNIEMBED_CACHE/eval``, else ``$XDG_CACHE_HOME/uniembed/eval``, else
    ``~/.cache/uniembed/eval``."""
    if "UNIEMBED_CACHE" in os.environ:
        return Path(os.environ["UNIEMBED_CACHE"]).expanduser() / "eval"
    base = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
    return base / "uniembed" / "eval"


@dataclass(frozen=True)
class CacheKey:
    """Everything an encoding depends on."""

    model: str  # name|family
    weights: str  # Embedder.weights_digest()
    task: str
    options: tuple[tuple[str, Any], ...]  # encode options that change vectors (max_tokens, …)
    items: int
    fingerprint: str  # of ids and contents (uniembed.evaluation.data.fingerprint)

    def digest(self) -> str:
        """Folder name of the entry.

        >>> len(CacheKey("m", "w", "t", (), 1, "f").digest())
        32
        """
        text = json.dumps([CACHE_VERSION, asdict(self)], sort_keys=True, default=list)
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class CacheEntry:
    """The chunks of one encoding; ``chunk_size`` items per chunk (fixed when the entry is made)."""

    def __init__(self, folder: Path, key: CacheKey, chunk_size: int) -> None:
        self.folder = folder
        self.key = key
        self.chunk_size = self._settle_chunk_size(chunk_size)

    def _settle_chunk_size(self, chunk_size: int) -> int:
        manifest = self.folder / "manifest.json"
        if manifest.is_file():
            try:
                stored = json.loads(manifest.read_text(encoding="utf-8"))
                return int(stored["chunk_size"])
            except (ValueError, KeyError, TypeError) as error:
                raise InvalidInput(
                    f"{manifest}: unreadable cache manifest ({error}); delete the folder"
                ) from error
        write_text(
            manifest,
            json.dumps(
                {"version": CACHE_VERSION, "chunk_size": chunk_size, "key": asdict(self.key)},
                indent=1,
                default=list,
            ),
        )
        return chunk_size

    def _path(self, index: int) -> Path:
        return self.folder / f"chunk-{index:06d}.npz"

    def has(self, index: int) -> bool:
        return self._path(index).is_file()

    def read(self, index: int) -> tuple[Encodings, float]:
        """A chunk's encodings and the seconds its encoding took."""
        with np.load(self._path(index)) as arrays:
            data = {name: arrays[name] for name in arrays.files}
        return Encodings.from_numpy(data), float(data["seconds"])

    def write(self, index: int, encodings: Encodings, seconds: float) -> None:
        with atomic_path(self._path(index)) as tmp, tmp.open("wb") as file:
            np.savez(file, seconds=np.float64(seconds), **encodings.to_numpy())


class EncodingCache:
    """Entries under ``root`` (one folder per :class:`CacheKey`)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def entry(self, key: CacheKey, chunk_size: int) -> CacheEntry:
        return CacheEntry(self.root / key.digest(), key, chunk_size)
