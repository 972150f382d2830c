"""Saving a trained task: a small adapter folder, and a full snapshot in the official layout.

* :func:`save_adapter` — the task's factors (written by the model's family, with the files its own
  tools read: for v4 the folder is also a PEFT adapter) and a config (family, base model, rank,
  alpha, targets, prompts); served with ``uniembed.load(base, adapters={name: folder})`` or
  ``uniembed serve --adapter name=folder``.
* :func:`export_snapshot` — a copy of the base snapshot with the task added as the official code
  stores its tasks, written by the snapshot's family (``write_task`` in each family's ``layout``
  module).

Both write into a temporary folder next to the destination and rename it at the end, so an
interrupted export leaves nothing half-written. Base files are hard-linked where the file system
allows (they are never modified), else copied.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from uniembed.errors import InvalidInput
from uniembed.models.adapters import ADAPTER_SETTINGS_FILE, FORMAT_VERSION, read_adapter_folder
from uniembed.models.base import AdaptableModel, check_task_name, task_api_names
from uniembed.models.loading import read_json, resolve_snapshot
from uniembed.models.registry import family_of
from uniembed.models.writing import write_json


# --------------------------------------------------------------------------- adapter folders
def save_adapter(
    model: AdaptableModel,
    task: str,
    directory: str | Path,
    *,
    base_model: str,
    symmetric: bool,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write task ``task`` of ``model`` as an adapter folder (replacing an earlier one
    atomically)."""
    directory = Path(directory)
    sides = task_api_names(task, symmetric)
    prompts = {side: model.resolve_task(name).prefix for side, name in sides.items()}
    if symmetric:
        prompts = {"query": prompts["query"]}
    lora = model.lora_settings()
    settings = {
        "format": FORMAT_VERSION,
        "task": task,
        "family": model.info.family,
        "base_model": base_model,
        "symmetric": symmetric,
        "api_task_names": sorted(set(sides.values())),
        "prompts": prompts,
        "r": lora.get("r"),
        "lora_alpha": lora.get("lora_alpha"),
        "target_modules": lora.get("target_modules"),
        "training": training or {},
    }
    with _atomic_directory(directory, replace=True) as tmp:
        model.write_adapter_files(task, tmp, base_model=base_model)
        write_json(tmp / ADAPTER_SETTINGS_FILE, settings)
    return directory


# --------------------------------------------------------------------------- full snapshots
def export_snapshot(
    base: str | os.PathLike[str],
    adapter: str | Path,
    output: str | Path,
    *,
    name: str | None = None,
    replace_task: bool = False,
) -> Path:
    """A copy of snapshot ``base`` holding the adapter folder's task (as ``name``, default the
    folder's task name) in the official layout. ``output`` must not exist; an existing task of the
    same name is replaced only with ``replace_task``."""
    snapshot = resolve_snapshot(base)
    folder = read_adapter_folder(adapter)
    task = name or folder.task
    check_task_name(task)
    config = read_json(snapshot / "config.json")
    family = family_of(config)
    if family.name != folder.family:
        raise InvalidInput(
            f"{folder.path} holds a {folder.family} adapter; {snapshot} is {family.name}"
        )
    output = Path(output)
    if output.exists():
        raise InvalidInput(f"{output} exists; choose a new folder for the exported snapshot")
    with _atomic_directory(output, replace=False) as tmp:
        family.write_task(snapshot, config, folder, task, replace=replace_task, output=tmp)
    return output


# --------------------------------------------------------------------------- files
@contextmanager
def _atomic_directory(destination: Path, *, replace: bool) -> Iterator[Path]:
    """A temporary folder beside ``destination`` that becomes it when the block succeeds."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        yield tmp
        if destination.exists():
            if not replace:
                raise InvalidInput(f"{destination} exists")
            old = destination.with_name(f".{destination.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            destination.rename(old)
            tmp.rename(destination)
            shutil.rmtree(old)
        else:
            tmp.rename(destination)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
