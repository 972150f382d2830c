"""Write files so that a crash never leaves one half-written: a temporary name beside the target,
renamed over it when complete (``os.replace`` is atomic on one file system)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write; it becomes ``path`` when the block ends, and is removed if the
    block raises (or is interrupted).

    >>> import tempfile; folder = Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "a.txt") as tmp: _ = tmp.write_text("done")
    >>> sorted(p.name for p in folder.iterdir()), (folder / "a.txt").read_text()
    (['a.txt'], 'done')
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
