"""Pick the model family of a snapshot from its config.json: load it, or write a task into it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from uniembed.errors import CheckpointError
from uniembed.models.base import EmbeddingModel
from uniembed.models.loading import read_json, resolve_device, resolve_dtype, resolve_snapshot
from uniembed.models.quantized import check_int8_device, is_int8


def detect_family(config: dict[str, Any]) -> str:
    """``"jina-embeddings-v4"`` or ``"jina-embeddings-v3"`` from a config.json's content.

    >>> detect_family({"architectures": ["JinaEmbeddingsV4Model"]})
    'jina-embeddings-v4'
    >>> detect_family({"lora_adaptations": ["retrieval.query"]})
    'jina-embeddings-v3'
    """
    names = " ".join(
        [*config.get("architectures", []), *map(str, config.get("auto_map", {}).values())]
    )
    if "JinaEmbeddingsV4" in names or ("task_names" in config and "vision_config" in config):
        return "jina-embeddings-v4"
    # XLMRobertaFlash alone is not enough: other Jina XLM-R models without adapters use it too.
    if "lora_adaptations" in config or "XLMRobertaLoRA" in names:
        return "jina-embeddings-v3"
    if config.get("model_type") == "jina_embeddings_v3":
        return "jina-embeddings-v3"
    raise CheckpointError(
        f"unsupported model: architectures={config.get('architectures')}, "
        f"model_type={config.get('model_type')}; uniembed serves jina-embeddings-v4 and "
        "jina-embeddings-v3 snapshots"
    )


@dataclass(frozen=True)
class Family:
    """A model family's entry points: everything outside ``models/`` reaches a family here."""

    name: str
    # (snapshot, config, *, name, device, dtype, int8) -> the loaded model
    load: Callable[..., EmbeddingModel]
    # (snapshot, config, folder, task, *, replace, output): a copy of the snapshot holding the
    # adapter folder's task in the family's official layout
    write_task: Callable[..., None]


def family_of(config: dict[str, Any]) -> Family:
    """The family of a config.json's content; only that family's modules are imported."""
    name = detect_family(config)
    if name == "jina-embeddings-v4":
        from uniembed.models.jina_v4 import layout as v4_layout
        from uniembed.models.jina_v4.model import load_jina_v4

        return Family(name, load_jina_v4, v4_layout.write_task)
    from uniembed.models.jina_v3 import layout as v3_layout
    from uniembed.models.jina_v3.model import load_jina_v3

    return Family(name, load_jina_v3, v3_layout.write_task)


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    name: str | None = None,
) -> EmbeddingModel:
    """Load any supported model from a local snapshot directory or a hub id.

    ``dtype="int8"``: float32 activations and int8 linears (:mod:`uniembed.models.quantized`),
    on the CPU only (:class:`~uniembed.errors.InvalidInput` elsewhere)."""
    torch_device = resolve_device(device)
    int8 = is_int8(dtype)
    if int8:
        check_int8_device(torch_device)
    torch_dtype = torch.float32 if int8 else resolve_dtype(dtype, torch_device)
    snapshot = resolve_snapshot(name_or_path)
    config = read_json(snapshot / "config.json")
    family = family_of(config)
    model_name = name or model_name_of(name_or_path)
    return family.load(
        snapshot, config, name=model_name, device=torch_device, dtype=torch_dtype, int8=int8
    )


def model_name_of(name_or_path: str | os.PathLike[str]) -> str:
    """The model's own name (``ModelInfo.name``, what indexes and bulk outputs record): the hub id
    as given, or a local directory's name. The name clients call a served model by is the server's
    rule (:func:`uniembed.server.registry.last_path_component`).

    >>> model_name_of("jinaai/jina-embeddings-v4"), model_name_of("/models/jina-v3/")
    ('jinaai/jina-embeddings-v4', 'jina-v3')
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir() or text.startswith((".", "/", "~")):
        return path.resolve().name if path.exists() else path.name
    return text
