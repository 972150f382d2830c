"""Files: JSON lines read with ``path:line`` in every error, and writes that a crash never leaves
half done (a temporary name beside the target, renamed over it when complete: ``os.replace`` is
atomic on one file system)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from uniembed.errors import InvalidInput


def read_jsonl(path: Path, *, objects: bool = True) -> Iterator[tuple[str, Any]]:
    """``(where, value)`` for every non-blank line of ``path``; ``where`` is ``path:line``, and a
    line that is not JSON (or, with ``objects``, not a JSON object) raises :class:`InvalidInput`
    naming it. A value nested past the parser's depth is not JSON either.

    >>> import tempfile; file = Path(tempfile.mkdtemp()) / "a.jsonl"
    >>> _ = file.write_text('{"id": 1}\\n\\n[2]\\n')
    >>> next(read_jsonl(file))[1]
    {'id': 1}
    >>> list(read_jsonl(file))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    uniembed.errors.InvalidInput: ...a.jsonl:3: expected a JSON object, got list
    """
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                raise InvalidInput(f"{where}: not valid JSON ({error.msg})") from None
            except RecursionError:
                raise InvalidInput(f"{where}: not valid JSON (nested too deeply)") from None
            if objects and not isinstance(value, dict):
                raise InvalidInput(f"{where}: expected a JSON object, got {type(value).__name__}")
            yield where, value


@contextlib.contextmanager
def atomic_path(path: Path, *, durable: bool = False) -> Iterator[Path]:
    """A temporary path to write; it becomes ``path`` when the block ends, and is removed if the
    block raises (or is interrupted). ``durable`` flushes it to disk first (fsync), so after a
    power loss ``path`` is the old file or the whole new one.

    >>> import tempfile; folder = Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "a.txt") as tmp: _ = tmp.write_text("done")
    >>> sorted(p.name for p in folder.iterdir()), (folder / "a.txt").read_text()
    (['a.txt'], 'done')
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as written:
                os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str, *, durable: bool = False) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_text(text, encoding="utf-8")
