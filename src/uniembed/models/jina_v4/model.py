"""jina-embeddings-v4 behind the :class:`~uniembed.models.base.EmbeddingModel` contract: the
processor's rows run through the network, each with its own task adapter, single vectors pooled
from the last hidden states and multi-vectors from the projector; tasks are added beside the
official ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uniembed.core.vectors import mean_pool_spans, normalize
from uniembed.errors import CheckpointError, InvalidInput
from uniembed.models.adapters import save_factors
from uniembed.models.base import (
    GradOutput,
    ModelInfo,
    ProcessorMethods,
    Row,
    RowOutput,
    check_task_name,
    pad_ids,
)
from uniembed.models.jina_v4.config import FAMILY, MAX_TOKENS, check_config
from uniembed.models.jina_v4.layout import peft_config, peft_module, task_factor_key
from uniembed.models.jina_v4.network import JinaV4Network, attach_adapters, build_network
from uniembed.models.jina_v4.processor import (
    CODE_TASK,
    DEFAULT_TASK,
    TASK_TYPES,
    JinaV4Processor,
    fixed_prefixes,
    load_image_processor,
    load_tokenizer,
)
from uniembed.models.lora import AdapterRouting, fresh_factors, routed_layers, set_backbone_training
from uniembed.models.packing import Packing
from uniembed.models.weights import frozen_parameter


class JinaV4Model(ProcessorMethods):
    """jina-embeddings-v4 behind the :class:`~uniembed.models.base.EmbeddingModel` contract."""

    def __init__(
        self,
        network: JinaV4Network,
        routing: AdapterRouting,
        processor: JinaV4Processor,
        config: dict[str, Any],
        *,
        name: str,
        device: torch.device,
        dtype: torch.dtype,
        adapter_config: dict[str, Any] | None = None,
    ) -> None:
        self.network = network
        self.routing = routing
        self.processor = processor  # owns the tasks, added ones too
        self.adapter_config = dict(
            adapter_config or {}
        )  # the snapshot's adapters/adapter_config.json
        self.device = device
        self.dtype = dtype
        hidden = int(config["text_config"]["hidden_size"])
        self.info = ModelInfo(
            name=name,
            family=FAMILY,
            dim=hidden,
            matryoshka_dims=tuple(int(d) for d in config.get("matryoshka_dims") or (hidden,)),
            max_tokens=MAX_TOKENS,
            tasks=tuple(processor.api_tasks),
            default_task=DEFAULT_TASK,
            multivector_dim=int(config.get("multi_vector_projector_dim", 128)),
            modalities=frozenset({"text", "image"}),
            task_types=TASK_TYPES,
            code_task=CODE_TASK,
        )

    # ----------------------------------------------------------------- tasks and inputs
    # ----------------------------------------------------------------- the model
    @torch.inference_mode()
    def forward(self, batch: Sequence[Row]) -> list[RowOutput]:
        hidden, projected, _ = self._run(batch)
        hidden = hidden.float()
        multivectors = (
            normalize(projected.float()) if projected is not None else None
        )  # (batch, seq, 128)
        outputs = []
        for index, row in enumerate(batch):
            states = hidden[index, : row.num_tokens]  # (tokens, hidden)
            pooled = mean_pool_spans(states, row.spans).cpu()
            multi = multivectors[index, : row.num_tokens].cpu() if row.multivector else None  # type: ignore[index]
            outputs.append(RowOutput(pooled, multi))
        return outputs

    @torch.inference_mode()
    def forward_packed(self, batch: Sequence[Row]) -> list[RowOutput]:
        """:meth:`forward` padding-free: the rows packed into one sequence
        (:mod:`uniembed.models.packing`), each with its own 3-D positions and adapter."""
        packing = Packing.of(batch)
        hidden, projected = self._run_packed(batch, packing)
        hidden = hidden[0].float()  # (tokens, hidden)
        multivectors = normalize(projected[0].float()) if projected is not None else None
        outputs = []
        for index, row in enumerate(batch):
            tokens = packing.slice_of(index)
            pooled = mean_pool_spans(hidden[tokens], row.spans).cpu()
            multi = multivectors[tokens].cpu() if row.multivector else None  # type: ignore[index]
            outputs.append(RowOutput(pooled, multi))
        return outputs

    def _run_packed(
        self, batch: Sequence[Row], packing: Packing
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Last hidden states (1, tokens, hidden) and, if a row wants multi-vectors, projected
        token vectors (1, tokens, 128) of the packed batch."""
        input_ids = packing.input_ids(batch).to(self.device)  # (1, tokens)
        images = [batch[i].image for i in packing.order if batch[i].image is not None]
        pixel_values = grid = None
        if images:
            pixel_values = torch.cat([img.pixel_values for img in images]).to(
                self.device, self.dtype
            )
            grid = torch.tensor([img.grid_thw for img in images], device=self.device)
        positions = torch.cat(
            [self._row_positions(batch[i]) for i in packing.order], dim=-1
        )  # (3, 1, tokens)
        layer_types = set(self.network.backbone.config.text_config.layer_types)
        with self.routing.use_tokens(packing.token_adapters(batch).to(self.device)):
            hidden, projected = self.network(
                project=any(row.multivector for row in batch),
                input_ids=input_ids,
                attention_mask=dict.fromkeys(layer_types),  # no mask: rows come from cu_seqlens
                position_ids=positions.to(self.device),
                pixel_values=pixel_values,
                image_grid_thw=grid,
                **packing.attention_kwargs(self.device),
            )  # (1, tokens, hidden), (1, tokens, 128) or None
        return hidden, projected

    def _row_positions(self, row: Row) -> torch.Tensor:
        """One row's 3-D multimodal RoPE positions (3, 1, tokens), as in a batch of its own."""
        if row.image is None:
            return torch.arange(row.num_tokens).view(1, 1, -1).expand(3, 1, -1)
        ids = row.input_ids.unsqueeze(0)  # (1, tokens)
        grid = torch.tensor([row.image.grid_thw])
        image_token = self.processor.template.image_token
        return self.network.positions(ids, torch.ones_like(ids), grid, image_token).cpu()

    def forward_with_grad(self, batch: Sequence[Row]) -> GradOutput:
        hidden, projected, mask = self._run(batch)
        hidden = hidden.float()
        pooled = torch.cat(
            [mean_pool_spans(hidden[i, : row.num_tokens], row.spans) for i, row in enumerate(batch)]
        )
        multivectors = None
        if projected is not None:
            multivectors = normalize(projected.float()) * mask.unsqueeze(
                -1
            )  # (batch, seq, 128), 0 at padding
        return GradOutput(pooled, multivectors, mask.bool())

    def _run(self, batch: Sequence[Row]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Last hidden states (batch, seq, hidden), projected token vectors (batch, seq, 128) if a
        row wants multi-vectors, and the attention mask (batch, seq)."""
        input_ids, mask = pad_ids(
            [row.input_ids for row in batch], self.processor.template.pad_token
        )
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        images = [row.image for row in batch if row.image is not None]
        pixel_values = grid = None
        if images:
            pixel_values = torch.cat([img.pixel_values for img in images]).to(
                self.device, self.dtype
            )
            grid = torch.tensor([img.grid_thw for img in images], device=self.device)
        positions = self.network.positions(
            input_ids, mask, grid, self.processor.template.image_token
        )
        adapters = torch.tensor([row.adapter for row in batch], device=self.device)
        with self.routing.use(adapters):
            hidden, projected = self.network(
                project=any(row.multivector for row in batch),
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                pixel_values=pixel_values,
                image_grid_thw=grid,
            )  # (batch, seq, hidden), (batch, seq, 128) or None
        return hidden, projected, mask

    def set_training(self, enabled: bool, *, gradient_checkpointing: bool = False) -> None:
        set_backbone_training(self.network.backbone, self.routing, enabled, gradient_checkpointing)
        self.network.projector.train(enabled)

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
        """See :meth:`uniembed.models.base.AdaptableModel.add_task`. ``factors`` are keyed as PEFT
        saves one adapter (:func:`task_factor_key` without a task). v4's prefixes are fixed
        (``Query: `` / ``Passage: ``): ``prompts`` may only repeat them."""
        check_task_name(name)
        if name in self.processor.tasks and not replace:
            raise InvalidInput(f"task {name!r} exists in {self.info.name}; choose another name")
        fixed = fixed_prefixes(name, symmetric)
        if any(fixed.get(api) != text for api, text in (prompts or {}).items()):
            raise InvalidInput(
                f"{self.info.name} has fixed prefixes {fixed}; other prompts cannot be set"
            )
        layers = routed_layers(self.network)
        if factors is not None:
            new = _factors_by_layer(factors, layers)
        elif init_from is not None:
            source = self.processor.task(init_from).adapter
            new = {
                path: (layer.lora_A[source].detach(), layer.lora_B[source].detach())
                for path, layer in layers.items()
            }
        else:
            generator = torch.Generator().manual_seed(seed)
            new = {path: fresh_factors(layer, generator) for path, layer in layers.items()}
        dtype = factor_dtype or self.dtype
        for path, (a, b) in new.items():
            adapter = layers[path].add_adapter(
                frozen_parameter(a, dtype, self.device), frozen_parameter(b, dtype, self.device)
            )
        self.processor.add_task(name, adapter, symmetric)
        self.info = dataclasses.replace(self.info, tasks=tuple(self.processor.api_tasks))

    def task_factors(self, name: str) -> dict[str, torch.Tensor]:
        adapter = self.processor.task(name).adapter
        factors = {}
        for path, layer in routed_layers(self.network).items():
            module = peft_module(path)
            factors[task_factor_key(module, "A")] = layer.lora_A[adapter].detach().cpu().clone()
            factors[task_factor_key(module, "B")] = layer.lora_B[adapter].detach().cpu().clone()
        return factors

    def task_parameters(self, name: str) -> list[nn.Parameter]:
        adapter = self.processor.task(name).adapter
        layers = routed_layers(self.network).values()
        return [p for layer in layers for p in (layer.lora_A[adapter], layer.lora_B[adapter])]

    def lora_settings(self) -> dict[str, Any]:
        return dict(self.adapter_config)

    def write_adapter_files(self, task: str, directory: Path, *, base_model: str) -> None:
        """The task's factors as PEFT saves one adapter, and PEFT's ``adapter_config.json``: the
        folder is a PEFT adapter too."""
        save_factors(self.task_factors(task), directory)
        peft_config(self.lora_settings(), base_model).save_pretrained(str(directory))


def _factors_by_layer(factors: Mapping[str, torch.Tensor], layers: Mapping[str, Any]) -> dict:
    """Single-adapter PEFT keys → (A, B) per adapted layer; every layer must be covered exactly."""
    wanted = {}
    for path, layer in layers.items():
        module = peft_module(path)
        pair = []
        for factor, like in (("A", layer.lora_A[0]), ("B", layer.lora_B[0])):
            key = task_factor_key(module, factor)
            if key not in factors:
                raise CheckpointError(f"adapter factors lack {key!r}")
            if tuple(factors[key].shape) != tuple(like.shape):
                raise CheckpointError(
                    f"adapter factor {key!r} has shape {tuple(factors[key].shape)}; the model "
                    f"needs {tuple(like.shape)} (an adapter trained on another base model or rank?)"
                )
            pair.append(factors[key])
        wanted[path] = tuple(pair)
    extra = sorted(
        set(factors) - {task_factor_key(peft_module(p), f) for p in layers for f in "AB"}
    )
    if extra:
        raise CheckpointError(
            f"adapter factors hold {len(extra)} tensors this model has no layer for, e.g. "
            f"{extra[0]!r}"
        )
    return wanted


def load_jina_v4(
    snapshot: Path,
    config: dict[str, Any],
    *,
    name: str,
    device: torch.device,
    dtype: torch.dtype,
    int8: bool = False,
) -> JinaV4Model:
    """Build a :class:`JinaV4Model` from a snapshot in the official layout (``int8``: the
    backbone's linears in int8, :mod:`uniembed.models.quantized`)."""
    check_config(snapshot, config)
    tokenizer = load_tokenizer(snapshot)
    image_processor = load_image_processor(snapshot)
    network = build_network(snapshot, config, dtype, int8)
    routing = AdapterRouting()
    adapter_config = attach_adapters(network, snapshot, tuple(config["task_names"]), routing)
    network.requires_grad_(False).to(
        device
    ).eval()  # frozen: training makes one task's factors trainable
    return JinaV4Model(
        network,
        routing,
        JinaV4Processor(tokenizer, image_processor, config, name=name),
        config,
        name=name,
        device=device,
        dtype=dtype,
        adapter_config=adapter_config,
    )
