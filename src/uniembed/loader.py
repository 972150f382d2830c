""":func:`load`: a model folder or hub id to an :class:`~uniembed.embedder.Embedder`, the one way
every command, the server, the index and Ray actors load a model. Importing this module is cheap:
torch and the model code are imported by the call."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from uniembed.embedder import Embedder


def load(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    token_budget: int | None = None,
    max_batch_size: int | None = None,
    name: str | None = None,
    adapters: Mapping[str, str | os.PathLike[str]] | None = None,
    packing: bool = True,
) -> Embedder:
    """Load a jina-embeddings-v4 or v3 model from a local snapshot or a Hugging Face hub id.

    ``device``/``dtype`` take strings (``"cuda"``, ``"bfloat16"``) or torch objects; defaults: CUDA
    if available, float32 on CPU and bfloat16 on CUDA. ``token_budget``/``max_batch_size`` bound a
    batch. ``adapters`` maps new task names to adapter folders (written by ``uniembed train``),
    served beside the official tasks from the same base weights (see docs/training.md for the API
    task names). ``packing`` runs batches padding-free (rows packed into one sequence, the token
    budget counting real tokens); ``False`` runs padded batches, the reference path.
    """
    from uniembed.embedder import Embedder
    from uniembed.engine.planning import DEFAULT_MAX_BATCH_SIZE, DEFAULT_TOKEN_BUDGET, BatchPolicy
    from uniembed.models.registry import load_model

    model = load_model(name_or_path, device=device, dtype=dtype, name=name)
    if adapters:
        from uniembed.models.adapters import attach_adapter_folder

        for task, folder in adapters.items():
            attach_adapter_folder(model, task, folder)  # type: ignore[arg-type]
    policy = BatchPolicy(
        token_budget or DEFAULT_TOKEN_BUDGET, max_batch_size or DEFAULT_MAX_BATCH_SIZE, packing
    )
    source = None if adapters or name else _source(name_or_path)  # what reloads it as it is
    return Embedder(model, policy, source=source)


def _source(name_or_path: str | os.PathLike[str]) -> str:
    """A local snapshot as an absolute path (it works from any directory), else the hub id."""
    from pathlib import Path

    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else str(name_or_path)
