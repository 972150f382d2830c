"""jina-embeddings-v3's official (remote-code ``XLMRobertaLoRA``) weight layout, read and written.

Reading maps the official tensors onto transformers' ``JinaEmbeddingsV3Model``: ``roberta.`` keys,
a fused ``Wqkv`` split into q/k/v (its LoRA ``B`` split likewise, ``A`` shared), and the stacked
LoRA factors of every task held as torch parametrizations on each Linear and Embedding. Writing
(:func:`write_task`) stacks an added task's factors onto those parametrizations in a copy of the
snapshot, as the official code stores its tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from uniembed.errors import CheckpointError, InvalidInput
from uniembed.models.adapters import ADAPTER_WEIGHTS_FILE, AdapterFolder
from uniembed.models.base import task_api_names
from uniembed.models.jina_v3.config import JinaV3Config
from uniembed.models.loading import load_tensors, weight_files
from uniembed.models.lora import LoraWeights
from uniembed.models.writing import check_clash, link_tree, write_json


@dataclass(frozen=True)
class ModuleMap:
    """One official module and the transformers module(s) it becomes."""

    official: str  # under the ``roberta.`` prefix
    native: tuple[str, ...]  # several: the output rows are split evenly between them (fused Wqkv)
    kind: str  # "linear" | "embedding" | "norm"


def official_modules(num_layers: int) -> list[ModuleMap]:
    """The official module layout of a ``num_layers`` model mapped onto ``JinaEmbeddingsV3Model``.

    >>> [m.native for m in official_modules(1) if m.kind == "linear"][0]
    ('layers.0.self_attn.q_proj', 'layers.0.self_attn.k_proj', 'layers.0.self_attn.v_proj')
    """
    modules = [
        ModuleMap("embeddings.word_embeddings", ("embeddings.word_embeddings",), "embedding"),
        ModuleMap(
            "embeddings.token_type_embeddings", ("embeddings.token_type_embeddings",), "embedding"
        ),
        ModuleMap("emb_ln", ("embeddings.LayerNorm",), "norm"),
    ]
    for i in range(num_layers):
        old, new = f"encoder.layers.{i}", f"layers.{i}"
        qkv = tuple(f"{new}.self_attn.{p}_proj" for p in "qkv")
        modules += [
            ModuleMap(f"{old}.mixer.Wqkv", qkv, "linear"),
            ModuleMap(f"{old}.mixer.out_proj", (f"{new}.self_attn.o_proj",), "linear"),
            ModuleMap(f"{old}.norm1", (f"{new}.post_attention_layernorm",), "norm"),
            ModuleMap(f"{old}.mlp.fc1", (f"{new}.mlp.fc1",), "linear"),
            ModuleMap(f"{old}.mlp.fc2", (f"{new}.mlp.fc2",), "linear"),
            ModuleMap(f"{old}.norm2", (f"{new}.post_mlp_layernorm",), "norm"),
        ]
    return modules


def linear_weight_keys(num_layers: int) -> list[str]:
    """The official keys a Linear's base weight can have (with and without the ``roberta.``
    prefix, as a parametrization or plain): what an int8 load quantizes as it reads.

    >>> len(linear_weight_keys(1)), linear_weight_keys(1)[1]
    (16, 'roberta.encoder.layers.0.mixer.Wqkv.weight')
    """
    return [
        f"{prefix}{m.official}.{suffix}"
        for m in official_modules(num_layers)
        if m.kind == "linear"
        for prefix in ("roberta.", "")
        for suffix in ("parametrizations.weight.original", "weight")
    ]


@dataclass
class ConvertedWeights:
    """Official tensors in the transformers layout: base state dict and per-module LoRA factors."""

    state: dict[str, torch.Tensor]
    linear_lora: dict[str, LoraWeights]
    embedding_lora: dict[str, LoraWeights]


def lora_key(module: str, factor: str) -> str:
    """Official key of an official module's stacked LoRA factor (``factor`` ``"A"`` or ``"B"``).

    >>> lora_key("encoder.layers.0.mixer.Wqkv", "A")
    'roberta.encoder.layers.0.mixer.Wqkv.parametrizations.weight.0.lora_A'
    """
    return f"roberta.{module}.parametrizations.weight.0.lora_{factor}"


class _OfficialTensors:
    """Looks official tensors up by module path, naming the snapshot in errors."""

    def __init__(self, tensors: dict[str, torch.Tensor], source: Path) -> None:
        self.tensors = tensors
        self.source = source
        self.prefix = "roberta." if any(k.startswith("roberta.") for k in tensors) else ""

    def get(self, *names: str) -> torch.Tensor:
        for name in names:
            if (tensor := self.tensors.get(self.prefix + name)) is not None:
                return tensor
        raise CheckpointError(
            f"weights of {self.source} lack tensor {self.prefix + names[0]!r}; "
            "not an official jina-embeddings-v3 checkpoint?"
        )

    def base_weight(self, module: str) -> torch.Tensor:
        return self.get(f"{module}.parametrizations.weight.original", f"{module}.weight")

    def lora(self, module: str, config: JinaV3Config) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.get(f"{module}.parametrizations.weight.0.lora_A")
        b = self.get(f"{module}.parametrizations.weight.0.lora_B")
        tasks, rank = len(config.tasks), config.lora_rank
        rank_dims = (a.shape[2], b.shape[1]) if _is_embedding(module) else (a.shape[1], b.shape[2])
        if (
            a.dim() != 3
            or b.dim() != 3
            or a.shape[0] != tasks
            or b.shape[0] != tasks
            or rank_dims != (rank, rank)
        ):
            raise CheckpointError(
                f"LoRA of {self.prefix + module} in {self.source} has shapes A{tuple(a.shape)} "
                f"B{tuple(b.shape)}; config.json implies {tasks} tasks of rank {rank}"
            )
        return a, b


def _is_embedding(module: str) -> bool:
    return module.startswith("embeddings.")


def convert_official(
    tensors: dict[str, torch.Tensor], config: JinaV3Config, source: Path
) -> ConvertedWeights:
    """Map official tensors (with or without the ``roberta.`` prefix) onto
    ``JinaEmbeddingsV3Model``.

    Unused official tensors (the pooler, an MLM head) are ignored.
    """
    official = _OfficialTensors(tensors, source)
    converted = ConvertedWeights({}, {}, {})
    for module in official_modules(config.num_layers):
        if module.kind == "norm":
            converted.state[f"{module.native[0]}.weight"] = official.get(
                f"{module.official}.weight"
            )
            converted.state[f"{module.native[0]}.bias"] = official.get(f"{module.official}.bias")
            continue
        weight = official.base_weight(module.official)
        a, b = official.lora(module.official, config)
        if module.kind == "embedding":
            converted.state[f"{module.native[0]}.weight"] = weight
            converted.embedding_lora[module.native[0]] = LoraWeights(a, b, config.lora_scaling)
            continue
        parts = len(module.native)
        bias = official.get(f"{module.official}.bias")
        for target, w, bias_part, b_part in zip(
            module.native, weight.chunk(parts, 0), bias.chunk(parts, 0), b.chunk(parts, 1)
        ):
            converted.state[f"{target}.weight"] = w
            converted.state[f"{target}.bias"] = bias_part
            converted.linear_lora[target] = LoraWeights(a, b_part, config.lora_scaling)
    return converted


def write_task(
    snapshot: Path,
    config: dict,
    folder: AdapterFolder,
    task: str,
    *,
    replace: bool,
    output: Path,
) -> None:
    """Write into ``output`` a copy of ``snapshot`` holding the adapter folder's task as ``task``:
    every ``….parametrizations.weight.0.lora_{A,B}`` stack gains the task's adapters and
    ``config.json`` ``lora_adaptations`` / ``task_instructions`` their names and instructions."""
    sides = task_api_names(task, folder.symmetric)
    names = list(
        dict.fromkeys(sides.values())
    )  # the task's adapters, in the folder's stacking order
    adaptations = list(config["lora_adaptations"])
    for adapter_name in names:
        check_clash(adapter_name, adaptations, replace, snapshot)
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
    prefix = _OfficialTensors(tensors, snapshot).prefix
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
    link_tree(snapshot, output, skip=skip)
    write_json(output / "config.json", config)
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        str(output / "model.safetensors"),
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
