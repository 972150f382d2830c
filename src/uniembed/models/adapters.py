"""Adapter folders: one task's LoRA factors, served beside a base model's official tasks.

A folder holds ``adapter_model.safetensors`` (the task's factors keyed as in the family's official
adapter files: for v4 exactly as PEFT saves one adapter, with ``adapter_config.json`` a PEFT
``LoraConfig``; for v3 the slices of the official ``parametrizations`` tensors) and
``uniembed_adapter.json`` saying which family, base model and task it belongs to and how the task is
called. ``uniembed.training`` writes them; :func:`attach_adapter_folder` serves them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from uniembed.errors import CheckpointError
from uniembed.models.base import AdaptableModel, task_api_names
from uniembed.models.loading import load_tensors, read_json

ADAPTER_SETTINGS_FILE = "uniembed_adapter.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_CONFIG_FILE = "adapter_config.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class AdapterFolder:
    """What an adapter folder holds (see the module docstring)."""

    path: Path
    task: str  # the name it was trained under
    family: str
    symmetric: bool
    prompts: dict[str, str]  # side ("query" / "passage") → instruction or prefix
    settings: dict[str, Any]  # the whole uniembed_adapter.json
    factors: dict[str, torch.Tensor]


def read_adapter_folder(path: str | Path) -> AdapterFolder:
    """Read and check an adapter folder, naming the file that is wrong."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"adapter folder not found: {path}")
    settings_file = path / ADAPTER_SETTINGS_FILE
    settings = read_json(settings_file)
    if settings.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{settings_file}: unknown format {settings.get('format')!r} (expected "
            f"{FORMAT_VERSION})"
        )
    for key, kind in (("task", str), ("family", str), ("symmetric", bool), ("prompts", dict)):
        if not isinstance(settings.get(key), kind):
            raise CheckpointError(f"{settings_file}: {key!r} must be a {kind.__name__}")
    weights = path / ADAPTER_WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"missing file: {weights}")
    return AdapterFolder(
        path=path,
        task=settings["task"],
        family=settings["family"],
        symmetric=settings["symmetric"],
        prompts={str(k): str(v) for k, v in settings["prompts"].items()},
        settings=settings,
        factors=load_tensors([weights]),
    )


def save_factors(factors: dict[str, torch.Tensor], directory: Path) -> None:
    """Write an adapter folder's ``adapter_model.safetensors``."""
    save_file(factors, str(directory / ADAPTER_WEIGHTS_FILE), metadata={"format": "pt"})


def attach_adapter_folder(model: AdaptableModel, name: str, path: str | Path) -> None:
    """Serve the adapter in ``path`` as task ``name`` of ``model`` (names must not clash)."""
    folder = read_adapter_folder(path)
    if folder.family != model.info.family:
        raise CheckpointError(
            f"{folder.path} holds a {folder.family} adapter; {model.info.name} is "
            f"{model.info.family}"
        )
    sides = task_api_names(name, folder.symmetric)
    prompts = {sides[side]: text for side, text in folder.prompts.items() if side in sides}
    model.add_task(name, symmetric=folder.symmetric, factors=folder.factors, prompts=prompts)
