"""Putting checkpoint tensors into modules built on the meta device, shared by every family."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from uniembed.errors import CheckpointError


def assign_state(
    module: nn.Module, state: dict[str, torch.Tensor], dtype: torch.dtype, what: str, source: Path
) -> None:
    """Load ``state`` into ``module`` in ``dtype``, replacing its (meta) tensors.

    Every tensor ``module`` holds on the meta device must be in ``state`` with its shape; tensors
    of ``state`` that ``module`` does not hold are ignored. Errors name ``what`` (e.g. ``"the
    backbone"``) and the snapshot ``source``.
    """
    expected = {k: v for k, v in module.state_dict().items() if v.is_meta}  # not yet loaded
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(
            f"weights of {source} lack {len(missing)} tensors of {what}, e.g. {missing[:3]}"
        )
    for key, tensor in state.items():
        if key in expected and tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"tensor {key} of {what} in {source} has shape {tuple(tensor.shape)}, "
                f"config.json implies {tuple(expected[key].shape)}"
            )
    # strict=False: tensors already real (int8 layers, :mod:`uniembed.models.quantized`) stay;
    # every meta one was checked above to be in ``state``
    module.load_state_dict(
        {k: v.to(dtype) for k, v in state.items() if k in expected}, strict=False, assign=True
    )


def frozen_parameter(
    tensor: torch.Tensor, dtype: torch.dtype, device: torch.device
) -> nn.Parameter:
    """A copy of ``tensor`` as a Parameter on ``device`` in ``dtype``, without gradient (training
    turns on the ones it trains)."""
    return nn.Parameter(tensor.to(device=device, dtype=dtype, copy=True), requires_grad=False)
