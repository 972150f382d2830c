"""jina-embeddings-v3 behind the :class:`~uniembed.models.base.EmbeddingModel` contract: the
processor's rows run through the network, each with its own task adapter (or none: the base
weights, as the official code does without a task), and tasks are added beside the official ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uniembed.core.vectors import mean_pool_spans
from uniembed.errors import CheckpointError, InvalidInput
from uniembed.models.adapters import save_factors
from uniembed.models.base import (
    PASSAGE,
    QUERY,
    GradOutput,
    ModelInfo,
    ProcessorMethods,
    Row,
    RowOutput,
    check_task_name,
    pad_ids,
    task_api_names,
)
from uniembed.models.jina_v3.config import FAMILY, JinaV3Config, parse_config
from uniembed.models.jina_v3.layout import (
    ModuleMap,
    convert_official,
    linear_weight_keys,
    lora_key,
    official_modules,
)
from uniembed.models.jina_v3.network import attach_adapters, build_backbone
from uniembed.models.jina_v3.processor import TASK_TYPES, JinaV3Processor, load_tokenizer
from uniembed.models.loading import load_tensors, weight_files
from uniembed.models.lora import (
    NO_ADAPTER,
    AdapterRouting,
    fresh_factors,
    routed_layers,
    set_backbone_training,
)
from uniembed.models.packing import Packing
from uniembed.models.quantized import int8_reader
from uniembed.models.weights import frozen_parameter


class JinaV3Model(ProcessorMethods):
    """jina-embeddings-v3 behind the :class:`~uniembed.models.base.EmbeddingModel` contract."""

    def __init__(
        self,
        backbone: nn.Module,
        routing: AdapterRouting,
        processor: JinaV3Processor,
        config: JinaV3Config,
        *,
        name: str,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.backbone = backbone
        self.routing = routing
        self.processor = processor  # owns the tasks' adapters and instructions, added ones too
        self.config = config  # as loaded; tasks added later live in the processor only
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
            official_batch_size=32,  # the official encode(): batches of 32, longest text first
            official_sorts_by_length=True,
            task_types=TASK_TYPES,
        )

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
            del self.processor.adapters[old]
            del self.processor.instructions[old]
        for offset, (api_name, side) in enumerate(zip(names, _sides_of(symmetric))):
            self.processor.adapters[api_name] = first + offset
            self.processor.instructions[api_name] = (prompts or {}).get(
                api_name, inherited.get(side, "")
            )
        self.info = dataclasses.replace(self.info, tasks=tuple(self.processor.adapters))

    def _instruction_of(self, adapter: int) -> str:
        return next(
            self.processor.instructions[n]
            for n, i in self.processor.adapters.items()
            if i == adapter
        )

    def _task_adapters(self, name: str) -> list[str]:
        """The API names (= adapter names) of task ``name``: itself, or its
        ``.query``/``.passage``."""
        return [
            n
            for n in (name, f"{name}.{QUERY}", f"{name}.{PASSAGE}")
            if n in self.processor.adapters
        ]

    def _sides(self, task: str) -> dict[str, int]:
        """The adapter each side of ``task`` runs: a symmetric task (or one side named alone) for
        both, else ``task.query`` / ``task.passage``."""
        if task in self.processor.adapters:
            return {QUERY: self.processor.adapters[task], PASSAGE: self.processor.adapters[task]}
        names = task_api_names(task, symmetric=False)
        if all(n in self.processor.adapters for n in names.values()):
            return {side: self.processor.adapters[n] for side, n in names.items()}
        tasks = sorted(
            {
                n.rsplit(".", 1)[0] if n.endswith((f".{QUERY}", f".{PASSAGE}")) else n
                for n in self.processor.adapters
            }
        )
        raise InvalidInput(f"unknown task {task!r} for {self.info.name}; tasks: {', '.join(tasks)}")

    def task_factors(self, name: str) -> dict[str, torch.Tensor]:
        adapters = self._task_adapters(name)
        if not adapters:
            self._sides(name)  # raises, naming the tasks
        return self._official_factors([self.processor.adapters[n] for n in adapters])

    def task_parameters(self, name: str) -> list[nn.Parameter]:
        indices = [self.processor.adapters[n] for n in self._task_adapters(name)]
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

    def write_adapter_files(self, task: str, directory: Path, *, base_model: str) -> None:
        """The task's factors, stacked over its adapters in the official layout."""
        save_factors(self.task_factors(task), directory)

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
                a = frozen_parameter(
                    official[lora_key(module.official, "A")][j], dtype, self.device
                )  # shared by q/k/v
                b = official[lora_key(module.official, "B")][j].chunk(len(natives), 0)
                for native, b_part in zip(natives, b):
                    native.add_adapter(a, frozen_parameter(b_part, dtype, self.device))


def _sides_of(symmetric: bool) -> list[str]:
    return [QUERY] if symmetric else [QUERY, PASSAGE]


def _row_outputs(hidden: torch.Tensor, batch: Sequence[Row]) -> list[RowOutput]:
    """Pool every row's spans on the device, then copy to the CPU once."""
    pooled = torch.cat(
        [mean_pool_spans(hidden[i, : row.num_tokens], row.spans) for i, row in enumerate(batch)]
    )
    pooled = pooled.cpu().split([len(row.spans) for row in batch])  # (spans, dim) per row
    return [RowOutput(pooled=rows) for rows in pooled]


def load_jina_v3(
    snapshot: Path,
    config: dict[str, Any],
    *,
    name: str,
    device: torch.device,
    dtype: torch.dtype,
    int8: bool = False,
) -> JinaV3Model:
    """Load an official jina-embeddings-v3 snapshot (config.json, model.safetensors,
    tokenizer.json); ``int8``: every Linear of the encoder in int8, each weight quantized as it is
    read (:mod:`uniembed.models.quantized`)."""
    parsed = parse_config(config, snapshot / "config.json")
    processor = JinaV3Processor(load_tokenizer(snapshot, parsed), parsed, name=name)
    quantize = int8_reader(linear_weight_keys(parsed.num_layers)) if int8 else None
    weights = convert_official(
        load_tensors(weight_files(snapshot), dtype, quantize), parsed, snapshot
    )
    backbone = build_backbone(parsed, weights, dtype, snapshot)
    routing = AdapterRouting()
    attach_adapters(backbone, weights, routing)
    backbone.requires_grad_(False).to(
        device
    ).eval()  # frozen: training makes one task's factors trainable
    return JinaV3Model(backbone, routing, processor, parsed, name=name, device=device, dtype=dtype)
