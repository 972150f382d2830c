"""jina-embeddings-v3's config.json: the values the model needs, checked once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uniembed.errors import CheckpointError

FAMILY = "jina-embeddings-v3"
# Published defaults (config.json `task_instructions` of jinaai/jina-embeddings-v3), used when a
# config does not carry its own.
DEFAULT_INSTRUCTIONS = {
    "retrieval.query": "Represent the query for retrieving evidence documents: ",
    "retrieval.passage": "Represent the document for retrieval: ",
    "separation": "",
    "classification": "",
    "text-matching": "",
}
NATIVE_MODEL_TYPE = (
    "jina_embeddings_v3"  # transformers-native layout (jinaai/jina-embeddings-v3-hf)
)


@dataclass(frozen=True)
class JinaV3Config:
    """The config.json values the model needs, checked once."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    type_vocab_size: int
    max_positions: int
    layer_norm_eps: float
    hidden_act: str
    rotary_base: float
    pad_token_id: int
    tasks: tuple[str, ...]
    lora_rank: int
    lora_alpha: float
    matryoshka_dims: tuple[int, ...]
    instructions: dict[str, str]

    @property
    def lora_scaling(self) -> float:
        return self.lora_alpha / self.lora_rank


def parse_config(config: dict[str, Any], source: Path) -> JinaV3Config:
    """Validate an official config.json; ``source`` names the file in errors."""
    if config.get("model_type") == NATIVE_MODEL_TYPE or any(
        "JinaEmbeddingsV3" in str(a) for a in config.get("architectures") or []
    ):
        raise CheckpointError(
            f"{source}: the transformers-native jina-embeddings-v3 layout (model_type "
            f"{NATIVE_MODEL_TYPE!r}, e.g. jinaai/jina-embeddings-v3-hf) is not supported yet: its "
            "task adapters are stored apart from the weights in a format uniembed cannot pin down. "
            "Use the official snapshot jinaai/jina-embeddings-v3 instead."
        )
    if config.get("position_embedding_type", "rotary") != "rotary":
        raise CheckpointError(
            f"{source}: position_embedding_type must be 'rotary' for jina-embeddings-v3"
        )
    hidden = _int(config, "hidden_size", source)
    tasks = _string_list(config, "lora_adaptations", source)
    instructions = config.get("task_instructions")
    if instructions is None:
        instructions = {task: DEFAULT_INSTRUCTIONS.get(task, "") for task in tasks}
    elif not (
        isinstance(instructions, dict) and all(isinstance(instructions.get(t), str) for t in tasks)
    ):
        raise CheckpointError(
            f"{source}: task_instructions must map every task of lora_adaptations to a string"
        )
    dims = config.get("matryoshka_dimensions") or [hidden]
    if not (isinstance(dims, list) and all(isinstance(d, int) and 0 < d <= hidden for d in dims)):
        raise CheckpointError(f"{source}: matryoshka_dimensions must be a list of sizes 1…{hidden}")
    parsed = JinaV3Config(
        hidden_size=hidden,
        num_layers=_int(config, "num_hidden_layers", source),
        num_heads=_int(config, "num_attention_heads", source),
        intermediate_size=_int(config, "intermediate_size", source),
        vocab_size=_int(config, "vocab_size", source),
        type_vocab_size=_int(config, "type_vocab_size", source, default=1),
        max_positions=_int(config, "max_position_embeddings", source),
        layer_norm_eps=float(config.get("layer_norm_eps", 1e-5)),
        hidden_act=str(config.get("hidden_act", "gelu")),
        rotary_base=float(config.get("rotary_emb_base", 20000.0)),  # official value 20000.0
        pad_token_id=_int(config, "pad_token_id", source, default=1),
        tasks=tuple(tasks),
        lora_rank=_int(config, "lora_rank", source),
        lora_alpha=float(config.get("lora_alpha", 1)),
        matryoshka_dims=tuple(sorted(set(dims))),
        instructions={task: instructions[task] for task in tasks},
    )
    if parsed.hidden_size % parsed.num_heads:
        raise CheckpointError(
            f"{source}: hidden_size {hidden} is not a multiple of num_attention_heads"
        )
    return parsed


def _int(config: dict[str, Any], key: str, source: Path, default: int | None = None) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CheckpointError(f"{source}: {key} must be a non-negative integer, got {value!r}")
    return value


def _string_list(config: dict[str, Any], key: str, source: Path) -> list[str]:
    value = config.get(key)
    if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        raise CheckpointError(
            f"{source}: {key} must be a non-empty list of task names, got {value!r}"
        )
    if len(set(value)) != len(value):
        raise CheckpointError(f"{source}: {key} names a task twice: {value!r}")
    return value
