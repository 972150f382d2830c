"""Find a snapshot (local directory or hub id) and read its files, naming any file that is wrong."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from uniembed.errors import CheckpointError
from uniembed.models.quantized import INT8, quantize_weight
from uniembed.models.streaming import read_converted

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"


def resolve_snapshot(name_or_path: str | os.PathLike[str]) -> Path:
    """A local directory as is, else a hub id downloaded (and cached) with huggingface_hub.

    With no network and nothing cached, fails fast with a message on how to use a local snapshot.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path} is a file; expected a model snapshot directory")
    name = str(name_or_path)
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise CheckpointError(
            f"model {name!r}: no such local directory, and not a hub id (owner/name)"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id=name))
    except LocalEntryNotFoundError as error:
        raise CheckpointError(
            f"model {name!r} is not in the local Hugging Face cache and the hub cannot be reached "
            f"({error.__class__.__name__}). Download the snapshot where the hub is reachable "
            f"(`hf download {name} --local-dir DIR`), copy DIR here and pass its path instead of "
            "the hub id: `--model DIR` on the command line, `uniembed.load(DIR)` in Python."
        ) from error
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise CheckpointError(f"could not download model {name!r}: {error}") from error


def read_json(path: Path) -> dict[str, Any]:
    """Parse a JSON file, raising :class:`CheckpointError` that names the file."""
    if not path.is_file():
        raise CheckpointError(f"missing file: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"malformed JSON in {path}: {error}") from error
    if not isinstance(data, dict):
        raise CheckpointError(f"malformed {path}: expected a JSON object")
    return data


def weight_files(snapshot: Path) -> list[Path]:
    """The safetensors files of a snapshot: the shards named by the index, or
    ``model.safetensors``."""
    index = snapshot / SAFETENSORS_INDEX
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"malformed {index}: no weight_map")
        files = [snapshot / name for name in sorted(set(weight_map.values()))]
    elif (snapshot / SAFETENSORS_SINGLE).is_file():
        files = [snapshot / SAFETENSORS_SINGLE]
    else:
        raise CheckpointError(
            f"missing file: {snapshot / SAFETENSORS_INDEX} (or {SAFETENSORS_SINGLE})"
        )
    for file in files:
        if not file.is_file():
            raise CheckpointError(f"missing file: {file}")
    return files


def load_tensors(
    files: Iterable[Path],
    dtype: torch.dtype | None = None,
    quantize: Callable[[str], bool] | None = None,
) -> dict[str, Any]:
    """Read every tensor of the given safetensors files on the CPU, in their stored dtype or, with
    ``dtype``, each floating-point one converted as it is read, one tensor at a time
    (:mod:`uniembed.models.streaming`): a bfloat16 checkpoint loads into float32 with no second
    full copy of the weights in memory. With ``quantize`` (and ``dtype``), the tensors whose key it
    accepts become :class:`~uniembed.models.quantized.Int8Weight` as they are read, so only one of
    them is ever in float at a time."""
    if quantize is not None and dtype is None:
        raise ValueError("quantizing while reading needs the dtype to read weights in")
    tensors: dict[str, Any] = {}
    for file in files:
        try:
            if dtype is None:
                with safe_open(str(file), framework="pt") as handle:
                    for key in handle.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                        tensors[key] = handle.get_tensor(key)
            else:
                for key, tensor in read_converted(file, dtype):
                    tensors[key] = quantize_weight(tensor) if quantize and quantize(key) else tensor
        except Exception as error:  # safetensors raises its own error types and OSError
            raise CheckpointError(f"unreadable safetensors file {file}: {error}") from error
    return tensors


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None`` → float32 on CPU, bfloat16 on CUDA; strings like ``"bfloat16"``/``"bf16"``
    accepted. ``"int8"`` is not a dtype of tensors but of linears: the caller resolves it
    (:func:`uniembed.models.registry.load_model`)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    aliases = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
        "half": torch.float16,
    }
    try:
        return aliases[str(dtype).lower()]
    except KeyError:
        raise ValueError(
            f"unknown dtype {dtype!r}; use one of {sorted([*aliases, INT8])}"
        ) from None


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` → CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
