"""Saving a trained task: a small adapter folder, and a full snapshot in the official layout.

* :func:`save_adapter` — the task's factors and a config (family, base model, rank, alpha, targets,
  prompts); served with ``uniembed.load(base, adapters={name: folder})`` or ``uniembed serve
  --adapter name=folder``. For v4 the folder is also a PEFT adapter (``adapter_config.json`` +
  ``adapter_model.safetensors`` as PEFT saves one adapter).
* :func:`export_snapshot` — a copy of the base snapshot with the task added as the official code
  stores its tasks: v4 ``adapters/adapter_model.safetensors`` gains
  ``base_model.model.<module>.lora_{A,B}.<task>.weight`` and ``config.json`` ``task_names`` the
  task; v3 every ``….parametrizations.weight.0.lora_{A,B}`` stack gains the task's adapters and
  ``config.json`` ``lora_adaptations`` / ``task_instructions`` their names and instructions.

Both write into a temporary folder next to the destination and rename it at the end, so an
interrupted export leaves nothing half-written. Base files are hard-linked where the file system
allows (they are never modified), else copied.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from uniembed._optional import require
from uniembed.errors import InvalidInput
from uniembed.models.adapters import (
    ADAPTER_SETTINGS_FILE,
    ADAPTER_WEIGHTS_FILE,
    FORMAT_VERSION,
    AdapterFolder,
    read_adapter_folder,
)
from uniembed.models.base import AdaptableModel, check_task_name, task_api_names
from uniembed.models.jina_v4 import with_task
from uniembed.models.loading import load_tensors, read_json, resolve_snapshot, weight_files
from uniembed.models.registry import detect_family

V4 = "jina-embeddings-v4"
V3 = "jina-embeddings-v3"


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
        save_file(
            model.task_factors(task), str(tmp / ADAPTER_WEIGHTS_FILE), metadata={"format": "pt"}
        )
        _write_json(tmp / ADAPTER_SETTINGS_FILE, settings)
        if model.info.family == V4:
            _peft_config(lora, base_model).save_pretrained(str(tmp))
    return directory


def _peft_config(settings: dict[str, Any], base_model: str) -> Any:
    """The base snapshot's adapter settings as a PEFT ``LoraConfig`` (fields PEFT knows)."""
    peft = require("peft", "train", "saving a v4 adapter")
    known = {f.name for f in fields(peft.LoraConfig) if f.init}
    values = {k: v for k, v in settings.items() if k in known}
    values.update(base_model_name_or_path=base_model, inference_mode=True)
    return peft.LoraConfig(**values)


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
    family = detect_family(config)
    if family != folder.family:
        raise InvalidInput(f"{folder.path} holds a {folder.family} adapter; {snapshot} is {family}")
    output = Path(output)
    if output.exists():
        raise InvalidInput(f"{output} exists; choose a new folder for the exported snapshot")
    with _atomic_directory(output, replace=False) as tmp:
        if family == V4:
            _export_v4(snapshot, config, folder, task, replace_task, tmp)
        else:
            _export_v3(snapshot, config, folder, task, replace_task, tmp)
    return output


def _export_v4(
    snapshot: Path, config: dict, folder: AdapterFolder, task: str, replace: bool, out: Path
) -> None:
    tasks = list(config["task_names"])
    _check_clash(task, tasks, replace, snapshot)
    adapters_file = snapshot / "adapters" / ADAPTER_WEIGHTS_FILE
    tensors = {k: v for k, v in load_tensors([adapters_file]).items() if f".{task}.weight" not in k}
    for key, value in folder.factors.items():
        tensors[with_task(key, task)] = value.contiguous()
    if task not in tasks:
        tasks.append(task)
    symmetric = [t for t in config.get("symmetric_task_names", []) if t != task]
    symmetric += [task] if folder.symmetric else []
    config = {**config, "task_names": tasks, "symmetric_task_names": symmetric}
    if not symmetric:
        del config["symmetric_task_names"]
    _link_tree(snapshot, out, skip={Path("config.json"), Path("adapters") / ADAPTER_WEIGHTS_FILE})
    _write_json(out / "config.json", config)
    save_file(tensors, str(out / "adapters" / ADAPTER_WEIGHTS_FILE), metadata={"format": "pt"})


def _export_v3(
    snapshot: Path, config: dict, folder: AdapterFolder, task: str, replace: bool, out: Path
) -> None:
    sides = task_api_names(task, folder.symmetric)
    names = list(
        dict.fromkeys(sides.values())
    )  # the task's adapters, in the folder's stacking order
    adaptations = list(config["lora_adaptations"])
    for adapter_name in names:
        _check_clash(adapter_name, adaptations, replace, snapshot)
    instructions = dict(config.get("task_instructions") or {})
    instructions.update({adapter_name: "" for adapter_name in names})
    instructions.update(
        {sides[side]: text for side, text in folder.prompts.items() if side in sides}
    )
    slots = []
    for adapter_name in names:
        if adapter_name not in adaptations:
            adaptations.append(adapter_name)
        slots.append(adaptations.index(adapter_name))
    files = weight_files(snapshot)
    tensors = load_tensors(files)
    prefix = "roberta." if any(k.startswith("roberta.") for k in tensors) else ""
    for key, value in folder.factors.items():
        target = prefix + key.removeprefix("roberta.")
        if target not in tensors:
            raise InvalidInput(
                f"{folder.path / ADAPTER_WEIGHTS_FILE}: {key!r} has no counterpart in {snapshot}"
            )
        tensors[target] = _with_slots(tensors[target], value.to(tensors[target].dtype), slots)
    config = {**config, "lora_adaptations": adaptations, "task_instructions": instructions}
    skip = {
        Path("config.json"),
        *(f.relative_to(snapshot) for f in files),
        Path("model.safetensors.index.json"),
    }
    _link_tree(snapshot, out, skip=skip)
    _write_json(out / "config.json", config)
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )


def _with_slots(stack: torch.Tensor, new: torch.Tensor, slots: list[int]) -> torch.Tensor:
    """``stack`` (adapters, …) with ``new[j]`` at adapter ``slots[j]`` (appended past the end)."""
    extra = max(slots) + 1 - stack.shape[0]
    if extra > 0:
        stack = torch.cat([stack, stack.new_zeros((extra, *stack.shape[1:]))])
    else:
        stack = stack.clone()
    for j, slot in enumerate(slots):
        stack[slot] = new[j]
    return stack


def _check_clash(name: str, existing: list[str], replace: bool, snapshot: Path) -> None:
    if name in existing and not replace:
        raise InvalidInput(
            f"{snapshot} already has a task {name!r}; pass replace_task=True (--overwrite) to "
            "replace it"
        )


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


def _link_tree(source: Path, destination: Path, skip: set[Path]) -> None:
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


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
