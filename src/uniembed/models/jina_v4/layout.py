"""jina-embeddings-v4's official weight layout, read and written.

The official shards use the pre-4.52 Qwen2.5-VL key layout (``model.layers.*``, ``visual.*``),
mapped onto transformers' ``Qwen2_5_VLModel`` by :func:`backbone_key`, plus
``multi_vector_projector.*``. The task adapters are one PEFT file, ``adapters/
adapter_model.safetensors``, keyed ``base_model.model.<module>.lora_{A,B}.<task>.weight`` in the
current transformers naming; :func:`write_task` adds a task to a copy of the snapshot that way.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from uniembed._optional import require
from uniembed.errors import CheckpointError
from uniembed.models.adapters import ADAPTER_WEIGHTS_FILE, AdapterFolder
from uniembed.models.jina_v4.config import SYMMETRIC_TASKS_KEY
from uniembed.models.loading import load_tensors, read_json
from uniembed.models.lora import LoraWeights
from uniembed.models.writing import check_clash, link_tree, write_json

_ADAPTER_KEY = re.compile(
    r"^base_model\.model\.(?P<module>.+)\.lora_(?P<factor>[AB])\.(?P<task>[^.]+)\.weight$"
)
_SINGLE_ADAPTER_KEY = re.compile(
    r"^base_model\.model\.(?P<module>.+)\.lora_(?P<factor>[AB])\.weight$"
)
PEFT_PREFIX = "base_model.model."


def backbone_key(key: str) -> str | None:
    """Official shard key → ``Qwen2_5_VLModel`` state-dict key; ``None`` for keys it does not hold.

    >>> backbone_key("model.layers.0.mlp.up_proj.weight"), backbone_key("visual.merger.ln_q.weight")
    ('language_model.layers.0.mlp.up_proj.weight', 'visual.merger.ln_q.weight')
    >>> backbone_key("model.language_model.norm.weight"), backbone_key("lm_head.weight")
    ('language_model.norm.weight', None)
    """
    if key.startswith(("model.language_model.", "model.visual.")):
        return key[len("model.") :]
    if key.startswith("visual."):
        return key
    if key.startswith("model."):
        return "language_model." + key[len("model.") :]
    return None


def official_key(name: str) -> str:
    """``Qwen2_5_VLModel`` state-dict key → the key in the official shards (the inverse of
    :func:`backbone_key`).

    >>> official_key("language_model.layers.0.mlp.up_proj.weight")
    'model.layers.0.mlp.up_proj.weight'
    """
    if name.startswith("language_model."):
        return "model." + name[len("language_model.") :]
    if name.startswith("visual."):
        return name
    raise ValueError(f"unexpected backbone key {name}")


def adapter_module(module: str) -> str:
    """PEFT module path (after ``base_model.model.``) → path under :class:`JinaV4Network`.

    >>> adapter_module("model.language_model.layers.3.self_attn.q_proj")
    'backbone.language_model.layers.3.self_attn.q_proj'
    >>> adapter_module("model.layers.3.mlp.down_proj"), adapter_module("multi_vector_projector")
    ('backbone.language_model.layers.3.mlp.down_proj', 'projector')
    """
    if module == "multi_vector_projector":
        return "projector"
    mapped = backbone_key(module + ".weight")
    if mapped is None:
        raise CheckpointError(f"adapter for unknown module {module!r}")
    return "backbone." + mapped[: -len(".weight")]


def peft_module(path: str) -> str:
    """Path under :class:`JinaV4Network` → PEFT module path (the inverse of :func:`adapter_module`),
    in the current transformers naming that the official adapter file uses.

    >>> peft_module("backbone.language_model.layers.3.self_attn.q_proj"), peft_module("projector")
    ('model.language_model.layers.3.self_attn.q_proj', 'multi_vector_projector')
    """
    if path == "projector":
        return "multi_vector_projector"
    if not path.startswith("backbone."):
        raise ValueError(f"no PEFT name for module {path!r}")
    return "model." + path[len("backbone.") :]


def task_factor_key(module: str, factor: str, task: str | None = None) -> str:
    """A PEFT key: with ``task`` as in the official multi-task file, without as PEFT saves one
    adapter.

    >>> task_factor_key("multi_vector_projector", "A", "code")
    'base_model.model.multi_vector_projector.lora_A.code.weight'
    >>> task_factor_key("multi_vector_projector", "B")
    'base_model.model.multi_vector_projector.lora_B.weight'
    """
    return f"{PEFT_PREFIX}{module}.lora_{factor}.{task + '.' if task else ''}weight"


def with_task(key: str, task: str) -> str:
    """A single-adapter PEFT key (:func:`task_factor_key` without a task) → the official file's key.

    >>> with_task("base_model.model.multi_vector_projector.lora_B.weight", "my-domain")
    'base_model.model.multi_vector_projector.lora_B.my-domain.weight'
    """
    match = _SINGLE_ADAPTER_KEY.match(key)
    if match is None:
        raise CheckpointError(f"not a PEFT LoRA factor key: {key!r}")
    return task_factor_key(match["module"], match["factor"], task)


def split_state(tensors: dict[str, torch.Tensor], snapshot: Path) -> tuple[dict, dict]:
    """Official shard tensors → the backbone's state (``Qwen2_5_VLModel`` keys) and the
    projector's."""
    backbone, projector = {}, {}
    for key, tensor in tensors.items():
        if key.startswith("multi_vector_projector."):
            projector[key[len("multi_vector_projector.") :]] = tensor
        elif (mapped := backbone_key(key)) is not None:
            backbone[mapped] = tensor
    if not projector:
        raise CheckpointError(f"no multi_vector_projector.* tensors in the weights of {snapshot}")
    return backbone, projector


def read_adapters(
    snapshot: Path, tasks: tuple[str, ...]
) -> tuple[dict[str, LoraWeights], dict[str, Any]]:
    """Every task's factors stacked per module (keyed by path under :class:`JinaV4Network`), and
    the snapshot's adapter_config.json."""
    adapters = snapshot / "adapters"
    settings = read_json(adapters / "adapter_config.json")
    try:
        rank, alpha = int(settings["r"]), float(settings["lora_alpha"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"malformed {adapters / 'adapter_config.json'}: needs integer r and lora_alpha"
        ) from error
    scaling = alpha / (rank**0.5) if settings.get("use_rslora") else alpha / rank
    file = adapters / ADAPTER_WEIGHTS_FILE
    if not file.is_file():
        raise CheckpointError(f"missing file: {file}")
    return _stack_adapters(load_tensors([file]), tasks, scaling, file), settings


def _stack_adapters(
    tensors: dict[str, torch.Tensor], tasks: tuple[str, ...], scaling: float, file: Path
) -> dict[str, LoraWeights]:
    """PEFT keys ``base_model.model.<module>.lora_{A,B}.<task>.weight`` → stacked per-module
    factors."""
    factors: dict[str, dict[tuple[str, str], torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _ADAPTER_KEY.match(key)
        if match is None:
            raise CheckpointError(f"unexpected tensor {key!r} in {file}")
        factors.setdefault(match["module"], {})[(match["factor"], match["task"])] = tensor.float()
    layers = {}
    for module, parts in factors.items():
        try:
            a = torch.stack([parts[("A", task)] for task in tasks])
            b = torch.stack([parts[("B", task)] for task in tasks])
        except KeyError as error:
            raise CheckpointError(
                f"{file}: module {module} lacks the adapter {error.args[0]}"
            ) from None
        layers[adapter_module(module)] = LoraWeights(a, b, scaling)
    if not layers:
        raise CheckpointError(f"no adapter tensors in {file}")
    return layers


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
    ``adapters/adapter_model.safetensors`` gains its ``base_model.model.<module>.lora_{A,B}.<task>
    .weight`` and ``config.json`` ``task_names`` the task (``symmetric_task_names`` too if it is
    symmetric)."""
    tasks = list(config["task_names"])
    check_clash(task, tasks, replace, snapshot)
    adapters_file = snapshot / "adapters" / ADAPTER_WEIGHTS_FILE
    tensors = {k: v for k, v in load_tensors([adapters_file]).items() if f".{task}.weight" not in k}
    for key, value in folder.factors.items():
        tensors[with_task(key, task)] = value.contiguous()
    if task not in tasks:
        tasks.append(task)
    symmetric = [t for t in config.get(SYMMETRIC_TASKS_KEY, []) if t != task]
    symmetric += [task] if folder.symmetric else []
    config = {**config, "task_names": tasks, SYMMETRIC_TASKS_KEY: symmetric}
    if not symmetric:
        del config[SYMMETRIC_TASKS_KEY]
    link_tree(snapshot, output, skip={Path("config.json"), Path("adapters") / ADAPTER_WEIGHTS_FILE})
    write_json(output / "config.json", config)
    save_file(tensors, str(output / "adapters" / ADAPTER_WEIGHTS_FILE), metadata={"format": "pt"})


def peft_config(settings: dict[str, Any], base_model: str) -> Any:
    """The base snapshot's adapter settings as a PEFT ``LoraConfig`` (fields PEFT knows)."""
    peft = require("peft", "train", "saving a v4 adapter")
    known = {f.name for f in fields(peft.LoraConfig) if f.init}
    values = {k: v for k, v in settings.items() if k in known}
    values.update(base_model_name_or_path=base_model, inference_mode=True)
    return peft.LoraConfig(**values)
