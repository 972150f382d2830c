"""jina-embeddings-v3's network: transformers' ``JinaEmbeddingsV3Model`` (post-norm blocks, NeoX
rotary, no final norm) holding the official weights, with every task's LoRA resident on its Linear
and Embedding layers (:mod:`uniembed.models.lora`) so that each row of a batch runs its own task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from uniembed.errors import CheckpointError
from uniembed.models.jina_v3.config import JinaV3Config
from uniembed.models.jina_v3.layout import ConvertedWeights
from uniembed.models.lora import AdapterRouting, MultiLoRAEmbedding, attach_lora
from uniembed.models.packing import PACKED_ATTENTION, register_packed_attention
from uniembed.models.quantized import install_int8
from uniembed.models.weights import assign_state


def build_backbone(
    config: JinaV3Config, weights: ConvertedWeights, dtype: torch.dtype, source: Path
) -> nn.Module:
    """transformers' ``JinaEmbeddingsV3Model`` (sdpa attention, no pooler) holding ``weights``."""
    import transformers
    from transformers.activations import ACT2FN

    if not hasattr(transformers, "JinaEmbeddingsV3Model"):
        raise CheckpointError(
            f"jina-embeddings-v3 needs a transformers release that ships JinaEmbeddingsV3Model "
            f"(installed: {transformers.__version__}); upgrade transformers"
        )
    if config.hidden_act not in ACT2FN:
        raise CheckpointError(f"{source / 'config.json'}: unknown hidden_act {config.hidden_act!r}")
    from transformers import JinaEmbeddingsV3Config, JinaEmbeddingsV3Model

    native_config = JinaEmbeddingsV3Config(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,
        max_position_embeddings=config.max_positions,
        type_vocab_size=config.type_vocab_size,
        layer_norm_eps=config.layer_norm_eps,
        pad_token_id=config.pad_token_id,
        # the official inference runs without dropout and training here does too
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        rope_parameters={"rope_type": "default", "rope_theta": config.rotary_base},
    )
    register_packed_attention()
    # transformers' SDPA attention for padded batches, per row for packed ones
    native_config._attn_implementation = PACKED_ATTENTION
    with torch.device("meta"):  # no random init of weights that are overwritten next
        backbone = JinaEmbeddingsV3Model(native_config, add_pooling_layer=False)
    # int8 weights (read as Int8Weight, :mod:`uniembed.models.quantized`) become Int8Linear layers
    state = install_int8(backbone, weights.state)
    assign_state(backbone, state, dtype, "the backbone", source)
    _rebuild_buffers(backbone, native_config)
    return backbone


def _rebuild_buffers(backbone: nn.Module, native_config: Any) -> None:
    """Non-persistent buffers (rotary frequencies, position / token-type ids) are not in
    checkpoints: recreate them off the meta device, the rotary frequencies in float32 from a fresh
    rotary module."""
    backbone.rotary_emb = type(backbone.rotary_emb)(native_config)
    positions = torch.arange(native_config.max_position_embeddings).expand((1, -1))
    backbone.embeddings.register_buffer("position_ids", positions, persistent=False)
    backbone.embeddings.register_buffer(
        "token_type_ids", torch.zeros_like(positions), persistent=False
    )
    left = [name for name, buffer in backbone.named_buffers() if buffer.is_meta]
    if left:  # a transformers release with other buffers than the one this was written for
        raise RuntimeError(
            f"JinaEmbeddingsV3Model buffers {left} were not rebuilt; update _rebuild_buffers"
        )


def attach_adapters(
    backbone: nn.Module, weights: ConvertedWeights, routing: AdapterRouting
) -> None:
    """Every Linear and Embedding that carries official LoRA factors gets all tasks resident."""
    attach_lora(backbone, weights.linear_lora, routing)
    for path, lora in weights.embedding_lora.items():
        parent_path, _, name = path.rpartition(".")
        parent = backbone.get_submodule(parent_path)
        setattr(parent, name, MultiLoRAEmbedding(getattr(parent, name), lora, routing))
