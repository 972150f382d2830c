"""jina-embeddings-v4's network: transformers' ``Qwen2_5_VLModel`` and the multi-vector projector
holding the official weights, with every task's LoRA resident (:mod:`uniembed.models.lora`) so that
each row of a batch runs its own task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from uniembed.models.jina_v4.layout import official_key, read_adapters, split_state
from uniembed.models.loading import load_tensors, weight_files
from uniembed.models.lora import AdapterRouting, attach_lora
from uniembed.models.packing import PACKED_ATTENTION, register_packed_attention
from uniembed.models.quantized import install_int8, int8_reader, linear_weight_names
from uniembed.models.weights import assign_state


class JinaV4Network(nn.Module):
    """The backbone and the multi-vector projector: the weights ``forward`` runs."""

    def __init__(self, backbone: nn.Module, projector: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def forward(self, *, project: bool, **inputs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The backbone's last hidden states (batch, seq, hidden) for ``inputs`` (its keyword
        arguments) and, with ``project``, the projected token vectors (batch, seq, 128), LoRA of
        the routed adapters included."""
        hidden = self.backbone(**inputs, use_cache=False).last_hidden_state
        return hidden, self.projector(hidden) if project else None

    def positions(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        grid: torch.Tensor | None,
        image_token: int,
    ) -> torch.Tensor:
        """3-D multimodal RoPE positions (3, batch, seq); plain 0…n-1 on all three axes for text."""
        if grid is None:
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            return positions.unsqueeze(0).expand(3, -1, -1)
        token_types = (input_ids == image_token).int()
        positions, _ = self.backbone.get_rope_index(
            input_ids, mm_token_type_ids=token_types, image_grid_thw=grid, attention_mask=mask
        )
        return positions


def build_network(
    snapshot: Path, config: dict[str, Any], dtype: torch.dtype, int8: bool = False
) -> JinaV4Network:
    """The network of ``config`` holding the snapshot's weights in ``dtype`` (no adapters yet);
    with ``int8``, every Linear of the backbone (language model and vision tower) in int8, each
    quantized as it is read (:mod:`uniembed.models.quantized`); the projector stays in ``dtype``."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLModel

    backbone_config = Qwen2_5_VLConfig(
        **{k: v for k, v in config.items() if k not in ("architectures", "auto_map")}
    )
    register_packed_attention()
    backbone_config._attn_implementation = "sdpa"
    # transformers' SDPA attention for padded batches, per row for packed ones
    backbone_config.text_config._attn_implementation = PACKED_ATTENTION
    backbone_config.vision_config._attn_implementation = "sdpa"
    with torch.device("meta"):
        backbone = Qwen2_5_VLModel(backbone_config)
        projector = nn.Linear(
            backbone_config.text_config.hidden_size,
            int(config.get("multi_vector_projector_dim", 128)),
        )
    quantize = int8_reader(map(official_key, linear_weight_names(backbone))) if int8 else None
    backbone_state, projector_state = split_state(
        load_tensors(weight_files(snapshot), dtype, quantize),  # converted as read: no 2nd copy
        snapshot,
    )
    if int8:
        backbone_state = install_int8(backbone, backbone_state)  # type: ignore[arg-type]
    assign_state(backbone, backbone_state, dtype, "the backbone", snapshot)
    assign_state(projector, projector_state, dtype, "multi_vector_projector", snapshot)
    _rebuild_rotary_buffers(backbone)
    return JinaV4Network(backbone, projector)


def _rebuild_rotary_buffers(backbone: nn.Module) -> None:
    """Non-persistent rotary buffers are not in checkpoints; recompute them off the meta device."""
    for module in backbone.modules():
        buffers = dict(module.named_buffers(recurse=False))
        if "inv_freq" in buffers and buffers["inv_freq"].is_meta:
            fresh = type(module)(module.config)
            for buffer_name, value in fresh.named_buffers(recurse=False):
                setattr(module, buffer_name, value)


def attach_adapters(
    network: JinaV4Network, snapshot: Path, tasks: tuple[str, ...], routing: AdapterRouting
) -> dict[str, Any]:
    """Attach every task's adapter; returns the snapshot's adapter_config.json."""
    layers, settings = read_adapters(snapshot, tasks)
    attach_lora(network, layers, routing)
    return settings
