"""jina-embeddings-v4: Qwen2.5-VL backbone (from transformers) + task LoRA + multi-vector projector.

Facts (prompts, image template, pooling, key layout) follow the official model card and snapshot
files (``config.json``, ``preprocessor_config.json``, ``adapters/adapter_config.json``); the
README's "What the outputs are" section states them. The backbone is transformers'
``Qwen2_5_VLModel``; the official shards use the pre-4.52 key layout (``model.layers.*``,
``visual.*``), mapped here by :func:`backbone_key`. All three task adapters stay resident
(:mod:`uniembed.models.lora`) and each row of a batch uses its own.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from uniembed.core.vectors import mean_pool_spans, normalize
from uniembed.errors import CheckpointError, InvalidInput
from uniembed.models.base import (
    QUERY,
    GradOutput,
    ImageFeatures,
    ModelInfo,
    PatchGrid,
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
from uniembed.models.loading import load_tensors, read_json, weight_files
from uniembed.models.lora import (
    AdapterRouting,
    LoraWeights,
    attach_lora,
    fresh_factors,
    routed_layers,
    set_backbone_training,
)
from uniembed.models.packing import PACKED_ATTENTION, Packing, register_packed_attention

FAMILY = "jina-embeddings-v4"
MAX_TOKENS = 32768
DEFAULT_MAX_PIXELS = 602112  # preprocessor_config.json of the official snapshot (768 · 28²)
MAX_PIXELS_LIMIT = 20_000_000  # the model card: images up to 20 megapixels
IMAGE_TEMPLATE = (
    "<|im_start|>user\n<|vision_start|>",
    "<|vision_end|>Describe the image.<|im_end|>\n",
)
PAD_TOKEN = "<|endoftext|>"
PREFIXES = {"query": "Query", "passage": "Passage"}
# Symmetric tasks have one API name and always use the query prefix (the official code does so for
# text-matching); others are called task.query / task.passage. Added symmetric tasks are listed in
# config.json under SYMMETRIC_TASKS_KEY (a uniembed key; the official code ignores it).
OFFICIAL_SYMMETRIC_TASKS = ("text-matching",)
SYMMETRIC_TASKS_KEY = "symmetric_task_names"
DEFAULT_TASK = "retrieval.query"  # the official encode_text defaults prompt_name to "query"
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


class JinaV4Network(nn.Module):
    """The backbone and the multi-vector projector: the weights ``forward`` runs."""

    def __init__(self, backbone: nn.Module, projector: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector


@dataclass(frozen=True)
class _Task:
    """A servable task: its resident adapter and whether both sides share one API name."""

    adapter: int
    symmetric: bool


def _api_table(tasks: Mapping[str, _Task]) -> dict[str, tuple[int, str]]:
    """API task name → (adapter, prompt name); a symmetric task's one name takes the query
    prefix."""
    table: dict[str, tuple[int, str]] = {}
    for name, task in tasks.items():
        for side, api_name in task_api_names(name, task.symmetric).items():
            table.setdefault(api_name, (task.adapter, side))
    return table


@dataclass(frozen=True)
class _Template:
    """Token ids around the image placeholder tokens, and the special ids the model needs."""

    before_image: list[int]  # ends with <|vision_start|>
    after_image: list[int]  # starts with <|vision_end|>
    image_token: int
    pad_token: int


class JinaV4Model:
    """jina-embeddings-v4 behind the :class:`~uniembed.models.base.EmbeddingModel` contract."""

    def __init__(
        self,
        network: JinaV4Network,
        routing: AdapterRouting,
        tokenizer: Any,
        image_processor: Any,
        config: dict[str, Any],
        *,
        name: str,
        device: torch.device,
        dtype: torch.dtype,
        adapter_config: dict[str, Any] | None = None,
    ) -> None:
        self.network = network
        self.routing = routing
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        symmetric = {*OFFICIAL_SYMMETRIC_TASKS, *config.get(SYMMETRIC_TASKS_KEY, [])}
        self.tasks = {
            task: _Task(i, task in symmetric) for i, task in enumerate(config["task_names"])
        }
        self.api_tasks = _api_table(self.tasks)
        self.adapter_config = dict(
            adapter_config or {}
        )  # the snapshot's adapters/adapter_config.json
        self.device = device
        self.dtype = dtype
        self.merge_size = int(config["vision_config"].get("spatial_merge_size", 2))
        self.merge_unit = self.merge_size**2
        self.template = _template(tokenizer, int(config["image_token_id"]))
        self.min_pixels = int(image_processor.size["shortest_edge"])
        self.default_max_pixels = int(image_processor.size["longest_edge"])
        hidden = int(config["text_config"]["hidden_size"])
        self.info = ModelInfo(
            name=name,
            family=FAMILY,
            dim=hidden,
            matryoshka_dims=tuple(int(d) for d in config.get("matryoshka_dims") or (hidden,)),
            max_tokens=MAX_TOKENS,
            tasks=tuple(self.api_tasks),
            default_task=DEFAULT_TASK,
            multivector_dim=int(config.get("multi_vector_projector_dim", 128)),
            modalities=frozenset({"text", "image"}),
        )

    # ----------------------------------------------------------------- tasks and inputs
    def resolve_task(self, task: str | None, prompt_name: str | None = None) -> TaskSpec:
        """API names (``retrieval.query``) or official ones (``retrieval`` + ``prompt_name``)."""
        if prompt_name is not None and prompt_name not in PREFIXES:
            raise InvalidInput(f"invalid prompt_name {prompt_name!r}; use one of {list(PREFIXES)}")
        name = task or DEFAULT_TASK
        if name in self.tasks:  # official form: task + prompt_name (default "query")
            name = task_api_names(name, self.tasks[name].symmetric)[prompt_name or QUERY]
        if name not in self.api_tasks:
            valid = ", ".join(dict.fromkeys([*self.api_tasks, *self.tasks]))  # each name once
            raise InvalidInput(f"unknown task {task!r} for {self.info.name}; valid tasks: {valid}")
        adapter, prompt = self.api_tasks[name]
        return TaskSpec(name=name, adapter=adapter, prefix=f"{PREFIXES[prompt]}: ")

    def tokenize(self, text: str) -> TokenizedText:
        encoding = self.tokenizer.encode(text)
        return TokenizedText(
            list(encoding.ids),
            list(encoding.offsets),
            [bool(s) for s in encoding.special_tokens_mask],
        )

    def text_sequence(
        self, ids: list[int], task: TaskSpec, spans: Sequence[Span] | None = None
    ) -> Row:
        if not ids:
            raise InvalidInput("empty text: nothing to embed")
        return Row(
            torch.tensor(ids, dtype=torch.long), task.adapter, default_spans(len(ids), spans)
        )

    def image_sequence(
        self, image: Image.Image, task: TaskSpec, max_pixels: int | None = None
    ) -> Row:
        features = self.preprocess_image(image, max_pixels)
        t, h, w = features.grid_thw
        count = t * h * w // self.merge_unit
        before, after = self.template.before_image, self.template.after_image
        ids = before + [self.template.image_token] * count + after
        span = (
            len(before) - 1,
            len(before) + count + 1,
        )  # <|vision_start|> … <|vision_end|> inclusive
        merge = self.merge_size
        patches = PatchGrid(
            start=len(before), height=t * h // merge, width=w // merge
        )  # merged 2x2 cells
        return Row(
            torch.tensor(ids, dtype=torch.long),
            task.adapter,
            (span,),
            image=features,
            patches=patches,
        )

    def preprocess_image(self, image: Image.Image, max_pixels: int | None = None) -> ImageFeatures:
        """Resize (both sides multiples of 28, pixel count in [min, max]), normalise and
        patchify."""
        limit = max_pixels or self.default_max_pixels
        if not self.min_pixels <= limit <= MAX_PIXELS_LIMIT:
            raise InvalidInput(
                f"max_pixels must be between {self.min_pixels} and {MAX_PIXELS_LIMIT}, got {limit}"
            )
        width, height = image.size
        if min(width, height) < 1 or max(width, height) / min(width, height) > 200:
            raise InvalidInput(
                f"image of {width}x{height} pixels: the aspect ratio (long side / short side) "
                "must be at most 200"
            )
        size = {"shortest_edge": self.min_pixels, "longest_edge": limit}
        rgb = image if image.mode == "RGB" else image.convert("RGB")  # no copy of an RGB image
        batch = self.image_processor(images=[rgb], size=size, return_tensors="np")
        grid = tuple(int(v) for v in np.asarray(batch["image_grid_thw"])[0])
        pixels = torch.from_numpy(np.ascontiguousarray(batch["pixel_values"], dtype=np.float32))
        return ImageFeatures(pixel_values=pixels, grid_thw=grid)  # type: ignore[arg-type]

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
            hidden = self.network.backbone(
                input_ids=input_ids,
                attention_mask=dict.fromkeys(layer_types),  # no mask: rows come from cu_seqlens
                position_ids=positions.to(self.device),
                pixel_values=pixel_values,
                image_grid_thw=grid,
                use_cache=False,
                **packing.attention_kwargs(self.device),
            ).last_hidden_state  # (1, tokens, hidden)
            wants_multi = any(row.multivector for row in batch)
            projected = self.network.projector(hidden) if wants_multi else None
        return hidden, projected

    def _row_positions(self, row: Row) -> torch.Tensor:
        """One row's 3-D multimodal RoPE positions (3, 1, tokens), as in a batch of its own."""
        if row.image is None:
            return torch.arange(row.num_tokens).view(1, 1, -1).expand(3, 1, -1)
        ids = row.input_ids.unsqueeze(0)  # (1, tokens)
        return self._positions(ids, torch.ones_like(ids), torch.tensor([row.image.grid_thw])).cpu()

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
        input_ids, mask = pad_ids([row.input_ids for row in batch], self.template.pad_token)
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        images = [row.image for row in batch if row.image is not None]
        pixel_values = grid = None
        if images:
            pixel_values = torch.cat([img.pixel_values for img in images]).to(
                self.device, self.dtype
            )
            grid = torch.tensor([img.grid_thw for img in images], device=self.device)
        positions = self._positions(input_ids, mask, grid)
        adapters = torch.tensor([row.adapter for row in batch], device=self.device)
        with self.routing.use(adapters):
            hidden = self.network.backbone(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                pixel_values=pixel_values,
                image_grid_thw=grid,
                use_cache=False,
            ).last_hidden_state  # (batch, seq, hidden)
            wants_multi = any(row.multivector for row in batch)
            projected = self.network.projector(hidden) if wants_multi else None  # routed LoRA too
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
        if name in self.tasks and not replace:
            raise InvalidInput(f"task {name!r} exists in {self.info.name}; choose another name")
        fixed = {
            api: f"{PREFIXES[side]}: "
            for api, (_, side) in _api_table({name: _Task(0, symmetric)}).items()
        }
        if any(fixed.get(api) != text for api, text in (prompts or {}).items()):
            raise InvalidInput(
                f"{self.info.name} has fixed prefixes {fixed}; other prompts cannot be set"
            )
        layers = routed_layers(self.network)
        if factors is not None:
            new = _factors_by_layer(factors, layers)
        elif init_from is not None:
            source = self._task(init_from).adapter
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
                _parameter(a, dtype, self.device), _parameter(b, dtype, self.device)
            )
        self.tasks[name] = _Task(adapter, symmetric)
        self.api_tasks = _api_table(self.tasks)
        self.info = dataclasses.replace(self.info, tasks=tuple(self.api_tasks))

    def _task(self, name: str) -> _Task:
        if name not in self.tasks:
            raise InvalidInput(
                f"unknown task {name!r} for {self.info.name}; tasks: {', '.join(self.tasks)}"
            )
        return self.tasks[name]

    def task_factors(self, name: str) -> dict[str, torch.Tensor]:
        adapter = self._task(name).adapter
        factors = {}
        for path, layer in routed_layers(self.network).items():
            module = peft_module(path)
            factors[task_factor_key(module, "A")] = layer.lora_A[adapter].detach().cpu().clone()
            factors[task_factor_key(module, "B")] = layer.lora_B[adapter].detach().cpu().clone()
        return factors

    def task_parameters(self, name: str) -> list[nn.Parameter]:
        adapter = self._task(name).adapter
        layers = routed_layers(self.network).values()
        return [p for layer in layers for p in (layer.lora_A[adapter], layer.lora_B[adapter])]

    def lora_settings(self) -> dict[str, Any]:
        return dict(self.adapter_config)

    def _positions(
        self, input_ids: torch.Tensor, mask: torch.Tensor, grid: torch.Tensor | None
    ) -> torch.Tensor:
        """3-D multimodal RoPE positions (3, batch, seq); plain 0…n-1 on all three axes for text."""
        if grid is None:
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            return positions.unsqueeze(0).expand(3, -1, -1)
        token_types = (input_ids == self.template.image_token).int()
        positions, _ = self.network.backbone.get_rope_index(
            input_ids, mm_token_type_ids=token_types, image_grid_thw=grid, attention_mask=mask
        )
        return positions


def _parameter(tensor: torch.Tensor, dtype: torch.dtype, device: torch.device) -> nn.Parameter:
    return nn.Parameter(tensor.to(device=device, dtype=dtype, copy=True), requires_grad=False)


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


def _template(tokenizer: Any, image_token: int) -> _Template:
    before = list(tokenizer.encode(IMAGE_TEMPLATE[0]).ids)
    after = list(tokenizer.encode(IMAGE_TEMPLATE[1]).ids)
    pad = tokenizer.token_to_id(PAD_TOKEN)
    if tokenizer.id_to_token(image_token) != "<|image_pad|>" or pad is None:
        raise CheckpointError(
            f"tokenizer.json does not match config.json: id {image_token} should be <|image_pad|> "
            f"and {PAD_TOKEN} must exist"
        )
    return _Template(before, after, image_token, pad)


# --------------------------------------------------------------------- loading
def load_jina_v4(
    snapshot: Path, config: dict[str, Any], *, name: str, device: torch.device, dtype: torch.dtype
) -> JinaV4Model:
    """Build a :class:`JinaV4Model` from a snapshot in the official layout."""
    from tokenizers import Tokenizer

    _check_config(snapshot, config)
    tokenizer_file = snapshot / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise CheckpointError(f"missing file: {tokenizer_file}")
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    image_processor = _image_processor(snapshot)
    network = _network(snapshot, config, dtype)
    routing = AdapterRouting()
    adapter_config = _attach_adapters(network, snapshot, tuple(config["task_names"]), routing)
    network.requires_grad_(False).to(
        device
    ).eval()  # frozen: training makes one task's factors trainable
    return JinaV4Model(
        network,
        routing,
        tokenizer,
        image_processor,
        config,
        name=name,
        device=device,
        dtype=dtype,
        adapter_config=adapter_config,
    )


def _check_config(snapshot: Path, config: dict[str, Any]) -> None:
    for key in ("text_config", "vision_config", "task_names", "image_token_id"):
        if key not in config:
            raise CheckpointError(f"malformed {snapshot / 'config.json'}: missing key {key!r}")
    symmetric = config.get(SYMMETRIC_TASKS_KEY, [])
    if not (isinstance(symmetric, list) and set(symmetric) <= set(config["task_names"])):
        raise CheckpointError(
            f"malformed {snapshot / 'config.json'}: {SYMMETRIC_TASKS_KEY} must list names of "
            "task_names"
        )


def _image_processor(snapshot: Path) -> Any:
    """transformers' Qwen2-VL image processor, PIL backend (no torchvision), from the snapshot's
    settings."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    settings = read_json(snapshot / "preprocessor_config.json")
    known = (
        "min_pixels",
        "max_pixels",
        "patch_size",
        "temporal_patch_size",
        "merge_size",
        "image_mean",
        "image_std",
        "do_resize",
        "do_rescale",
        "rescale_factor",
        "do_normalize",
        "do_convert_rgb",
        "size",
    )
    return Qwen2VLImageProcessorPil(**{k: v for k, v in settings.items() if k in known})


def _network(snapshot: Path, config: dict[str, Any], dtype: torch.dtype) -> JinaV4Network:
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
    tensors = load_tensors(weight_files(snapshot))
    backbone_state, projector_state = _split_state(tensors, snapshot)
    _assign(backbone, backbone_state, dtype, "the backbone", snapshot)
    _assign(projector, projector_state, dtype, "multi_vector_projector", snapshot)
    _rebuild_rotary_buffers(backbone)
    return JinaV4Network(backbone, projector)


def _split_state(tensors: dict[str, torch.Tensor], snapshot: Path) -> tuple[dict, dict]:
    backbone, projector = {}, {}
    for key, tensor in tensors.items():
        if key.startswith("multi_vector_projector."):
            projector[key[len("multi_vector_projector.") :]] = tensor
        elif (mapped := backbone_key(key)) is not None:
            backbone[mapped] = tensor
    if not projector:
        raise CheckpointError(f"no multi_vector_projector.* tensors in the weights of {snapshot}")
    return backbone, projector


def _assign(
    module: nn.Module, state: dict[str, torch.Tensor], dtype: torch.dtype, what: str, snapshot: Path
) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(
            f"weights of {snapshot} lack {len(missing)} tensors of {what}, e.g. {missing[:3]}"
        )
    for key, tensor in state.items():
        if key in expected and tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"tensor {key} of {what} in {snapshot} has shape {tuple(tensor.shape)}, "
                f"config.json implies {tuple(expected[key].shape)}"
            )
    module.load_state_dict(
        {k: v.to(dtype) for k, v in state.items() if k in expected}, strict=True, assign=True
    )


def _rebuild_rotary_buffers(backbone: nn.Module) -> None:
    """Non-persistent rotary buffers are not in checkpoints; recompute them off the meta device."""
    for module in backbone.modules():
        buffers = dict(module.named_buffers(recurse=False))
        if "inv_freq" in buffers and buffers["inv_freq"].is_meta:
            fresh = type(module)(module.config)
            for buffer_name, value in fresh.named_buffers(recurse=False):
                setattr(module, buffer_name, value)


def _attach_adapters(
    network: JinaV4Network, snapshot: Path, tasks: tuple[str, ...], routing: AdapterRouting
) -> dict[str, Any]:
    """Attach every task's adapter; returns the snapshot's adapter_config.json."""
    adapters = snapshot / "adapters"
    settings = read_json(adapters / "adapter_config.json")
    try:
        rank, alpha = int(settings["r"]), float(settings["lora_alpha"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"malformed {adapters / 'adapter_config.json'}: needs integer r and lora_alpha"
        ) from error
    scaling = alpha / (rank**0.5) if settings.get("use_rslora") else alpha / rank
    file = adapters / "adapter_model.safetensors"
    if not file.is_file():
        raise CheckpointError(f"missing file: {file}")
    layers = _stack_adapters(load_tensors([file]), tasks, scaling, file)
    attach_lora(network, layers, routing)
    return settings


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
