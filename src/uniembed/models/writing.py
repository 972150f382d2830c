"""Writing a snapshot: a copy of a base snapshot with a few files replaced, as families export
added tasks into their official layout."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from uniembed.errors import InvalidInput


def link_tree(source: Path, destination: Path, skip: set[Path]) -> None:
    """Hard-link (else copy) every file under ``source`` into ``destination`` except ``skip``."""
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if (
            path.is_dir()
            or relative in skip
            or any(part.startswith(".") for part in relative.parts)
        ):
            continue
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path.resolve(), target)
        except OSError:
            shutil.copy2(path, target)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` as indented UTF-8 JSON with a final newline."""
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def check_clash(name: str, existing: list[str], replace: bool, snapshot: Path) -> None:
    """Refuse to export task ``name`` over one of ``existing`` unless ``replace``."""
    if name in existing and not replace:
        raise InvalidInput(
            f"{snapshot} already has a task {name!r}; pass replace_task=True (--overwrite) to "
            "replace it"
        )
