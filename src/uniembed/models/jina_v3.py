"""jina-embeddings-v3: XLM-RoBERTa with rotary positions and five task LoRA adapters, text only.

The official checkpoint (remote code ``XLMRobertaLoRA``) stores its weights under ``roberta.`` with
a fused ``Wqkv`` and every Linear / Embedding wrapped in a torch parametrization that holds the
stacked LoRA factors of all tasks. The backbone that current transformers ships
(``JinaEmbeddingsV3Model``: post-norm blocks, NeoX rotary, no final norm) is the same network with
separate q/k/v projections, so the official tensors are mapped onto it (``Wqkv`` split in three; its
LoRA ``B`` split likewise, ``A`` shared) and the adapters are attached as
:mod:`uniembed.models.lora` modules so that every row of a batch runs with its own task (or none:
the base weights, as the official code does without a task).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tokenizers import Tokenizer
from torch import nn

from uniembed.core.vectors import mean_pool_spans
from uniembed.errors import CheckpointError, InvalidInput
from uniembed.models.base import (
    PASSAGE,
    QUERY,
    GradOutput,
    ModelInfo,
    Row,
    RowOutput,
    Span,
    TaskSpec,
    TokenizedText,
    check_task_name,
    default_spans,
    pad_ids,
    task_api_names,
)
from uniembed.models.loading import load_tensors, weight_files
from uniembed.models.lora import (
    NO_ADAPTER,
    AdapterRouting,
    LoraWeights,
    MultiLoRAEmbedding,
    attach_lora,
    fresh_factors,
    routed_layers,
    set_backbone_training,
)
from uniembed.models.packing import PACKED_ATTENTION, Packing, register_packed_attention

FAMILY = "jina-embeddings-v3"
NO_TASK = "none"  # TaskSpec.name of a row run without a task (base weights, no instruction)
TOKENIZER_FILE = "tokenizer.json"
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


# --------------------------------------------------------------------------- configuration
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


# --------------------------------------------------------------------------- official key layout
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


# --------------------------------------------------------------------------- the network
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
    _assign(backbone, weights.state, dtype, source)
    _rebuild_buffers(backbone, native_config)
    return backbone


def _assign(
    module: nn.Module, state: dict[str, torch.Tensor], dtype: torch.dtype, source: Path
) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(
            f"weights of {source} lack {len(missing)} backbone tensors, e.g. {missing[:3]}"
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"tensor for {key} in {source} has shape {tuple(tensor.shape)}; "
                f"config.json implies {tuple(expected[key].shape)}"
            )
    module.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)


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


# --------------------------------------------------------------------------- the model
class JinaV3Model:
    """jina-embeddings-v3 behind the :class:`~uniembed.models.base.EmbeddingModel` contract."""

    def __init__(
        self,
        backbone: nn.Module,
        routing: AdapterRouting,
        tokenizer: Tokenizer,
        config: JinaV3Config,
        *,
        name: str,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.backbone = backbone
        self.routing = routing
        self.tokenizer = tokenizer
        self.config = config  # as loaded; tasks added later live in adapters / instructions only
        self.adapters = {
            task: index for index, task in enumerate(config.tasks)
        }  # API name → adapter
        self.instructions = dict(config.instructions)  # API name → instruction
        self.device = device
        self.dtype = dtype
        self.info = ModelInfo(
            name=name,
            family=FAMILY,
            dim=config.hidden_size,
            matryoshka_dims=config.matryoshka_dims,
            max_tokens=config.max_positions,
            tasks=config.tasks,
            default_task=None,  # no task = base weights, as in the official encode()
        )

    def resolve_task(self, task: str | None, prompt_name: str | None = None) -> TaskSpec:
        """An API task → its adapter and instruction; ``None`` (or its resolved name ``"none"``, so
        that a :class:`TaskSpec` name resolves back to itself) → base weights, no instruction."""
        if prompt_name is not None:
            raise InvalidInput(
                f"{self.info.name} takes no prompt_name (got {prompt_name!r}); choose the task "
                f"alone, one of: {', '.join(self.adapters)}"
            )
        if task is None or task == NO_TASK:
            return TaskSpec(name=NO_TASK, adapter=NO_ADAPTER, prefix="")
        if task not in self.adapters:
            raise InvalidInput(
                f"unknown task {task!r} for {self.info.name}; valid tasks: "
                f"{', '.join(self.adapters)} (or no task, {NO_TASK!r}, for the base weights)"
            )
        return TaskSpec(name=task, adapter=self.adapters[task], prefix=self.instructions[task])

    def tokenize(self, text: str) -> TokenizedText:
        """``<s> … </s>`` around the text's tokens; offsets are character offsets into ``text``."""
        encoding = self.tokenizer.encode(text)
        return TokenizedText(
            ids=list(encoding.ids),
            offsets=[tuple(o) for o in encoding.offsets],
            special=[bool(s) for s in encoding.special_tokens_mask],
        )

    def text_sequence(
        self, ids: list[int], task: TaskSpec, spans: Sequence[Span] | None = None
    ) -> Row:
        return Row(
            torch.tensor(ids, dtype=torch.long), task.adapter, default_spans(len(ids), spans)
        )

    def image_sequence(
        self, image: Image.Image, task: TaskSpec, max_pixels: int | None = None
    ) -> Row:
        raise InvalidInput(f"{self.info.name} embeds text only; images need jina-embeddings-v4")

    def forward(self, batch: Sequence[Row]) -> list[RowOutput]:
        """One right-padded batch, each row with its own adapter; mean pooling over each row's
        spans."""
        if not batch:
            return []
        with torch.inference_mode():
            hidden, _ = self._run(batch)
        return _row_outputs(hidden, batch)

    def forward_packed(self, batch: Sequence[Row]) -> list[RowOutput]:
        """:meth:`forward` padding-free: the rows packed into one sequence
        (:mod:`uniembed.models.packing`), each with its own positions and adapter."""
        if not batch:
            return []
        self._check_rows(batch)
        packing = Packing.of(batch)
        with (
            torch.inference_mode(),
            self.routing.use_tokens(packing.token_adapters(batch).to(self.device)),
        ):
            hidden = self.backbone(
                input_ids=packing.input_ids(batch).to(self.device),
                position_ids=packing.positions(batch).to(self.device),
                **packing.attention_kwargs(self.device),
            ).last_hidden_state[0]  # (tokens, dim)
        pooled = torch.cat(
            [
                mean_pool_spans(hidden[packing.slice_of(i)].float(), row.spans)
                for i, row in enumerate(batch)
            ]
        )
        pooled = pooled.cpu().split([len(row.spans) for row in batch])  # (spans, dim) per row
        return [RowOutput(pooled=rows) for rows in pooled]

    def forward_with_grad(self, batch: Sequence[Row]) -> GradOutput:
        hidden, mask = self._run(batch)
        pooled = torch.cat(
            [mean_pool_spans(hidden[i, : row.num_tokens], row.spans) for i, row in enumerate(batch)]
        )
        return GradOutput(pooled, None, mask.bool())

    def _run(self, batch: Sequence[Row]) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states (batch, seq, dim) in float32 and the attention mask (batch, seq)."""
        self._check_rows(batch)
        input_ids, mask = pad_ids([row.input_ids for row in batch], self.config.pad_token_id)
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        adapters = torch.tensor([row.adapter for row in batch], dtype=torch.long)
        with self.routing.use(adapters.to(self.device)):
            hidden = self.backbone(
                input_ids=input_ids, attention_mask=mask
            ).last_hidden_state.float()
        return hidden, mask

    def set_training(self, enabled: bool, *, gradient_checkpointing: bool = False) -> None:
        set_backbone_training(self.backbone, self.routing, enabled, gradient_checkpointing)

    def _check_rows(self, batch: Sequence[Row]) -> None:
        for row in batch:
            if row.multivector:
                raise InvalidInput(f"{self.info.name} has no multi-vector output")
            if not NO_ADAPTER <= row.adapter < self.resident_adapters:
                raise InvalidInput(
                    f"adapter {row.adapter} does not exist; {self.info.name} has "
                    f"{self.resident_adapters}"
                )
            if row.num_tokens == 0:
                raise InvalidInput("cannot embed an empty token sequence")

    @property
    def resident_adapters(self) -> int:
        return len(next(iter(routed_layers(self.backbone).values())).lora_A)

    # ----------------------------------------------------------------- added tasks
    def add_task(
        self,
        name: str,
        *,
        symmetric: bool = False,
        init_from: str | None = None,
        factors: Mapping[str, torch.Tensor] | None = None,
        prompts: Mapping[str, str] | None = None,
        replace: bool = False,
        factor_dtype: torch.dtype | None = None,
        seed: int = 0,
    ) -> None:
        """See :meth:`uniembed.models.base.AdaptableModel.add_task`. An asymmetric task gets two
        adapters, ``name.query`` and ``name.passage`` (as ``retrieval`` has); a symmetric one gets
        one adapter called ``name``. ``factors`` are keyed as in the official file
        (:func:`lora_key`), stacked over the task's adapters in that order. ``prompts`` maps those
        API names to their instructions (default: ``init_from``'s, else none)."""
        check_task_name(name)
        if self._task_adapters(name) and not replace:
            raise InvalidInput(f"task {name!r} exists in {self.info.name}; choose another name")
        names = list(
            dict.fromkeys(task_api_names(name, symmetric).values())
        )  # 1 or 2 adapter names
        unknown = sorted(set(prompts or {}) - set(names))
        if unknown:
            raise InvalidInput(
                f"prompts for {unknown} do not belong to task {name!r} (its names: {names})"
            )
        sources = self._sides(init_from) if init_from is not None else None
        inherited = (
            {side: self._instruction_of(i) for side, i in sources.items()} if sources else {}
        )
        if factors is not None:
            official = dict(factors)
        elif sources is not None:
            official = self._official_factors([sources[side] for side in _sides_of(symmetric)])
        else:
            official = self._fresh_factors(len(names), torch.Generator().manual_seed(seed))
        first = self.resident_adapters
        self._install(official, len(names), factor_dtype or self.dtype)
        for old in self._task_adapters(name):
            del self.adapters[old]
            del self.instructions[old]
        for offset, (api_name, side) in enumerate(zip(names, _sides_of(symmetric))):
            self.adapters[api_name] = first + offset
            self.instructions[api_name] = (prompts or {}).get(api_name, inherited.get(side, ""))
        self.info = dataclasses.replace(self.info, tasks=tuple(self.adapters))

    def _instruction_of(self, adapter: int) -> str:
        return next(self.instructions[n] for n, i in self.adapters.items() if i == adapter)

    def _task_adapters(self, name: str) -> list[str]:
        """The API names (= adapter names) of task ``name``: itself, or its
        ``.query``/``.passage``."""
        return [n for n in (name, f"{name}.{QUERY}", f"{name}.{PASSAGE}") if n in self.adapters]

    def _sides(self, task: str) -> dict[str, int]:
        """The adapter each side of ``task`` runs: a symmetric task (or one side named alone) for
        both, else ``task.query`` / ``task.passage``."""
        if task in self.adapters:
            return {QUERY: self.adapters[task], PASSAGE: self.adapters[task]}
        names = task_api_names(task, symmetric=False)
        if all(n in self.adapters for n in names.values()):
            return {side: self.adapters[n] for side, n in names.items()}
        tasks = sorted(
            {
                n.rsplit(".", 1)[0] if n.endswith((f".{QUERY}", f".{PASSAGE}")) else n
                for n in self.adapters
            }
        )
        raise InvalidInput(f"unknown task {task!r} for {self.info.name}; tasks: {', '.join(tasks)}")

    def task_factors(self, name: str) -> dict[str, torch.Tensor]:
        adapters = self._task_adapters(name)
        if not adapters:
            self._sides(name)  # raises, naming the tasks
        return self._official_factors([self.adapters[n] for n in adapters])

    def task_parameters(self, name: str) -> list[nn.Parameter]:
        indices = [self.adapters[n] for n in self._task_adapters(name)]
        unique: dict[int, nn.Parameter] = {}
        for layer in routed_layers(self.backbone).values():
            for index in indices:
                for parameter in (layer.lora_A[index], layer.lora_B[index]):
                    unique.setdefault(id(parameter), parameter)  # q/k/v share their A
        return list(unique.values())

    def lora_settings(self) -> dict[str, Any]:
        targets = sorted(
            {
                m.official.removeprefix("encoder.layers.0.")
                for m in official_modules(1)
                if m.kind != "norm"
            }
        )
        return {
            "r": self.config.lora_rank,
            "lora_alpha": self.config.lora_alpha,
            "target_modules": targets,
        }

    def _official_modules(self) -> list[tuple[ModuleMap, list[Any]]]:
        """Official modules that carry LoRA, with their adapted native layers."""
        layers = routed_layers(self.backbone)
        return [
            (m, [layers[n] for n in m.native])
            for m in official_modules(self.config.num_layers)
            if m.kind != "norm"
        ]

    def _official_factors(self, adapters: list[int]) -> dict[str, torch.Tensor]:
        """Factors of ``adapters`` in the official layout: q/k/v fused back into ``Wqkv`` (shared A,
        B concatenated), stacked over ``adapters``."""
        factors = {}
        for module, natives in self._official_modules():
            a = [natives[0].lora_A[i].detach() for i in adapters]
            b = [torch.cat([n.lora_B[i].detach() for n in natives]) for i in adapters]
            factors[lora_key(module.official, "A")] = torch.stack(a).cpu().clone()
            factors[lora_key(module.official, "B")] = torch.stack(b).cpu().clone()
        return factors

    def _fresh_factors(self, count: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        factors: dict[str, list[torch.Tensor]] = {}
        for _ in range(count):
            for module, natives in self._official_modules():
                a, b = fresh_factors(natives[0], generator)
                # a Linear's B starts at zero, so the fused Wqkv B is zeros of the fused shape
                b = torch.cat([b, *(torch.zeros(n.lora_B[0].shape) for n in natives[1:])])
                factors.setdefault(lora_key(module.official, "A"), []).append(a)
                factors.setdefault(lora_key(module.official, "B"), []).append(b)
        return {key: torch.stack(parts) for key, parts in factors.items()}

    def _install(
        self, official: Mapping[str, torch.Tensor], count: int, dtype: torch.dtype
    ) -> None:
        """Append ``count`` adapters from official-layout factors to every adapted layer (checked
        first)."""
        modules = self._official_modules()
        expected = {}
        for module, natives in modules:
            fused_b = (sum(n.lora_B[0].shape[0] for n in natives), natives[0].lora_B[0].shape[1])
            expected[lora_key(module.official, "A")] = (count, *natives[0].lora_A[0].shape)
            expected[lora_key(module.official, "B")] = (count, *fused_b)
        for key, shape in expected.items():
            if key not in official:
                raise CheckpointError(f"adapter factors lack {key!r}")
            if tuple(official[key].shape) != shape:
                raise CheckpointError(
                    f"adapter factor {key!r} has shape {tuple(official[key].shape)}; the model "
                    f"needs {shape} (an adapter trained on another base model or rank?)"
                )
        extra = sorted(set(official) - set(expected))
        if extra:
            raise CheckpointError(
                f"adapter factors hold {len(extra)} tensors this model has no layer for, e.g. "
                f"{extra[0]!r}"
            )
        for j in range(count):
            for module, natives in modules:
                a = _parameter(
                    official[lora_key(module.official, "A")][j], dtype, self.device
                )  # shared by q/k/v
                b = official[lora_key(module.official, "B")][j].chunk(len(natives), 0)
                for native, b_part in zip(natives, b):
                    native.add_adapter(a, _parameter(b_part, dtype, self.device))


def _sides_of(symmetric: bool) -> list[str]:
    return [QUERY] if symmetric else [QUERY, PASSAGE]


def _parameter(tensor: torch.Tensor, dtype: torch.dtype, device: torch.device) -> nn.Parameter:
    return nn.Parameter(tensor.to(device=device, dtype=dtype, copy=True), requires_grad=False)


def _row_outputs(hidden: torch.Tensor, batch: Sequence[Row]) -> list[RowOutput]:
    """Pool every row's spans on the device, then copy to the CPU once."""
    pooled = torch.cat(
        [mean_pool_spans(hidden[i, : row.num_tokens], row.spans) for i, row in enumerate(batch)]
    )
    pooled = pooled.cpu().split([len(row.spans) for row in batch])  # (spans, dim) per row
    return [RowOutput(pooled=rows) for rows in pooled]


# --------------------------------------------------------------------------- loading
def load_tokenizer(snapshot: Path, config: JinaV3Config) -> Tokenizer:
    """The snapshot's tokenizer.json (XLM-R SentencePiece), without truncation or padding."""
    path = snapshot / TOKENIZER_FILE
    if not path.is_file():
        raise CheckpointError(f"missing file: {path}")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception for malformed files
        raise CheckpointError(f"malformed tokenizer file {path}: {error}") from error
    tokenizer.no_truncation()
    tokenizer.no_padding()
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise CheckpointError(
            f"{path} has {tokenizer.get_vocab_size()} tokens, more than vocab_size "
            f"{config.vocab_size} of config.json"
        )
    return tokenizer


def load_jina_v3(
    snapshot: Path, config: dict[str, Any], *, name: str, device: torch.device, dtype: torch.dtype
) -> JinaV3Model:
    """Load an official jina-embeddings-v3 snapshot (config.json, model.safetensors,
    tokenizer.json)."""
    parsed = parse_config(config, snapshot / "config.json")
    tokenizer = load_tokenizer(snapshot, parsed)
    weights = convert_official(load_tensors(weight_files(snapshot)), parsed, snapshot)
    backbone = build_backbone(parsed, weights, dtype, snapshot)
    routing = AdapterRouting()
    attach_adapters(backbone, weights, routing)
    backbone.requires_grad_(False).to(
        device
    ).eval()  # frozen: training makes one task's factors trainable
    return JinaV3Model(backbone, routing, tokenizer, parsed, name=name, device=device, dtype=dtype)
