"""Tiny random jina-embeddings-v4 checkpoints in the exact official layout.

File names, config keys, tensor names (the pre-4.52 Qwen2.5-VL key layout of the official shards),
the adapter format (one PEFT file holding all task adapters) and the tokenizer's special token ids
follow the official snapshot, so loading one goes through exactly the code a real snapshot does.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from uniembed.models.jina_v4.layout import official_key, task_factor_key
from uniembed.testing.tokenizers import write_qwen2_vl_tokenizer

V4_TASKS = ("retrieval", "text-matching", "code")
LORA_TARGETS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)
# UNCONFIRMED: the exact target_modules regex of the official adapter_config.json.
OFFICIAL_TARGET_REGEX = (
    r"(.*(model)(?!.*visual).*(down_proj|gate_proj|up_proj|k_proj|q_proj|v_proj|o_proj).*$"
    r"|.*(single_vector_projector|multi_vector_projector).*$)"
)

TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "mrope_section": [2, 3, 3],
    "vision_depth": 2,
    "vision_hidden_size": 32,
    "vision_heads": 2,
    "vision_intermediate_size": 64,
    "fullatt_block_indexes": [1],
    "lora_rank": 4,
    "lora_alpha": 8,
}
# A mid-size config for CPU benchmarks: real code paths, minutes not hours.
MID = {
    "hidden_size": 512,
    "num_hidden_layers": 6,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "intermediate_size": 1536,
    "mrope_section": [8, 12, 12],
    "vision_depth": 4,
    "vision_hidden_size": 256,
    "vision_heads": 4,
    "vision_intermediate_size": 512,
    "fullatt_block_indexes": [3],
    "lora_rank": 16,
    "lora_alpha": 32,
}
# The published size, for GPU speed measurements with random weights.
FULL = {
    "hidden_size": 2048,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "intermediate_size": 11008,
    "mrope_section": [16, 24, 24],
    "vision_depth": 32,
    "vision_hidden_size": 1280,
    "vision_heads": 16,
    "vision_intermediate_size": 3420,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "lora_rank": 32,
    "lora_alpha": 32,
}


def v4_config(size: dict[str, Any]) -> dict[str, Any]:
    """config.json of the official snapshot, with the sizes of ``size``."""
    hidden = size["hidden_size"]
    matryoshka = [
        hidden // 16,
        hidden // 8,
        hidden // 4,
        hidden // 2,
        hidden,
    ]  # official: 128 … 2048
    return {
        "architectures": ["JinaEmbeddingsV4Model"],
        "auto_map": {
            "AutoConfig": "configuration_jina_embeddings_v4.JinaEmbeddingsV4Config",
            "AutoModel": "modeling_jina_embeddings_v4.JinaEmbeddingsV4Model",
        },
        # UNCONFIRMED: the official config class subclasses Qwen2_5_VLConfig
        "model_type": "qwen2_5_vl",
        "torch_dtype": "bfloat16",
        "single_vector_pool_strategy": "mean",
        "multi_vector_projector_dim": 128,
        "matryoshka_dims": matryoshka,
        "task_names": list(V4_TASKS),
        "truncate_dim": None,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
        "vision_token_id": 151654,
        "image_token_id": 151655,
        "video_token_id": 151656,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "tie_word_embeddings": True,
        "text_config": {
            "hidden_size": hidden,
            "num_hidden_layers": size["num_hidden_layers"],
            "num_attention_heads": size["num_attention_heads"],
            "num_key_value_heads": size["num_key_value_heads"],
            "intermediate_size": size["intermediate_size"],
            "hidden_act": "silu",
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "vocab_size": 151936,
            "max_position_embeddings": 128000,
            "rope_scaling": {"type": "mrope", "mrope_section": size["mrope_section"]},
            "use_sliding_window": False,
            "tie_word_embeddings": True,
        },
        "vision_config": {
            "depth": size["vision_depth"],
            "hidden_size": size["vision_hidden_size"],
            "intermediate_size": size["vision_intermediate_size"],
            "num_heads": size["vision_heads"],
            "out_hidden_size": hidden,
            "fullatt_block_indexes": size["fullatt_block_indexes"],
            "window_size": 112,
            "patch_size": 14,
            "spatial_patch_size": 14,
            "temporal_patch_size": 2,
            "spatial_merge_size": 2,
            "in_channels": 3,
            "hidden_act": "silu",
            "tokens_per_second": 2,
        },
    }


PREPROCESSOR_CONFIG = {
    "min_pixels": 3136,
    "max_pixels": 602112,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2_5_VLProcessor",
    "do_resize": True,
    "do_rescale": True,
    "rescale_factor": 0.00392156862745098,
    "do_normalize": True,
    "do_convert_rgb": True,
    "resample": 3,
}


def _random_backbone_state(
    config: dict[str, Any], generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Random weights for every tensor of the backbone, keyed in the *current* transformers
    layout, in bfloat16 as the official shards hold them (each drawn in float32 and converted at
    once, so the full size never holds a float32 copy: 7.6 GB, not 22.8)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLModel

    with torch.device("meta"):
        skeleton = Qwen2_5_VLModel(Qwen2_5_VLConfig(**config))
    state = {}
    for name, param in skeleton.state_dict().items():
        if name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "ln_q.weight")):
            drawn = 1.0 + 0.1 * torch.randn(param.shape, generator=generator)
        elif name.endswith("bias"):
            drawn = 0.02 * torch.randn(param.shape, generator=generator)
        else:
            fan_in = param.shape[-1] if param.dim() > 1 else 1
            std = 1.0 if "embed_tokens" in name else 1.0 / math.sqrt(max(1, fan_in))
            drawn = std * torch.randn(param.shape, generator=generator)
        state[name] = drawn.to(torch.bfloat16)
    return state


def _lora_pairs(
    config: dict[str, Any], rank: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    text = config["text_config"]
    hidden, inter = text["hidden_size"], text["intermediate_size"]
    head_dim = hidden // text["num_attention_heads"]
    kv = text["num_key_value_heads"] * head_dim
    shapes = {
        "self_attn.q_proj": (hidden, hidden),
        "self_attn.k_proj": (hidden, kv),
        "self_attn.v_proj": (hidden, kv),
        "self_attn.o_proj": (hidden, hidden),
        "mlp.gate_proj": (hidden, inter),
        "mlp.up_proj": (hidden, inter),
        "mlp.down_proj": (inter, hidden),
    }
    modules = {
        f"model.language_model.layers.{i}.{target}": shapes[target]
        for i in range(text["num_hidden_layers"])
        for target in LORA_TARGETS
    }
    modules["multi_vector_projector"] = (hidden, config["multi_vector_projector_dim"])
    tensors = {}
    for module, (fan_in, fan_out) in modules.items():
        for task in V4_TASKS:
            tensors[task_factor_key(module, "A", task)] = torch.randn(
                rank, fan_in, generator=generator
            ) / math.sqrt(fan_in)
            tensors[task_factor_key(module, "B", task)] = (
                0.3 * torch.randn(fan_out, rank, generator=generator) / math.sqrt(rank)
            )
    return tensors


def write_tiny_jina_v4(
    path: str | Path, *, seed: int = 0, size: dict[str, Any] | None = None
) -> Path:
    """Write a random jina-embeddings-v4 snapshot (official layout, bf16 shards) and return its
    path."""
    size = {**TINY, **(size or {})}
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    config = v4_config(size)
    (path / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (path / "preprocessor_config.json").write_text(
        json.dumps(PREPROCESSOR_CONFIG, indent=2), encoding="utf-8"
    )
    write_qwen2_vl_tokenizer(path)

    state = {official_key(k): v for k, v in _random_backbone_state(config, generator).items()}
    hidden = size["hidden_size"]
    state["multi_vector_projector.weight"] = torch.randn(
        128, hidden, generator=generator
    ) / math.sqrt(hidden)
    state["multi_vector_projector.bias"] = 0.02 * torch.randn(128, generator=generator)
    _save_sharded({k: v.to(torch.bfloat16).contiguous() for k, v in state.items()}, path, shards=2)

    adapters = path / "adapters"
    adapters.mkdir(exist_ok=True)
    rank = size["lora_rank"]
    lora = _lora_pairs(config, rank, generator)
    save_file(
        {k: v.to(torch.bfloat16).contiguous() for k, v in lora.items()},
        str(adapters / "adapter_model.safetensors"),
        metadata={"format": "pt"},
    )
    (adapters / "adapter_config.json").write_text(
        json.dumps(_adapter_config(rank, size["lora_alpha"]), indent=2), encoding="utf-8"
    )
    return path


def _adapter_config(rank: int, alpha: int) -> dict[str, Any]:
    return {
        "alpha_pattern": {},
        "auto_mapping": None,
        "base_model_name_or_path": "jinaai/jina-embeddings-v4",
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": "gaussian",
        "layers_pattern": None,
        "layers_to_transform": None,
        "lora_alpha": alpha,
        "lora_dropout": 0.1,
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": rank,
        "rank_pattern": {},
        "revision": None,
        "target_modules": OFFICIAL_TARGET_REGEX,
        "task_type": "FEATURE_EXTRACTION",
        "use_dora": False,
        "use_rslora": False,
    }


def _save_sharded(state: dict[str, torch.Tensor], path: Path, shards: int) -> None:
    names = sorted(state)
    per_shard = math.ceil(len(names) / shards)
    weight_map, total = {}, 0
    for index in range(shards):
        file = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        part = {name: state[name] for name in names[index * per_shard : (index + 1) * per_shard]}
        save_file(part, str(path / file), metadata={"format": "pt"})
        weight_map.update({name: file for name in part})
        total += sum(t.numel() * t.element_size() for t in part.values())
    index_json = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(
        json.dumps(index_json, indent=2), encoding="utf-8"
    )
