"""jina-embeddings-v4's processor: task resolution (adapter and ``Query: `` / ``Passage: ``
prefix), tokenisation and image preprocessing (the Qwen2-VL image processor and the official image
template), the CPU side of the model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from uniembed.core.vectors import Span
from uniembed.errors import CheckpointError, InvalidInput
from uniembed.models.base import (
    QUERY,
    ImageFeatures,
    PatchGrid,
    Row,
    TaskSpec,
    TokenizedText,
    default_spans,
    task_api_names,
)
from uniembed.models.jina_v4.config import OFFICIAL_SYMMETRIC_TASKS, SYMMETRIC_TASKS_KEY
from uniembed.models.loading import read_json

DEFAULT_MAX_PIXELS = 602112  # preprocessor_config.json of the official snapshot (768 · 28²)
MAX_PIXELS_LIMIT = 20_000_000  # the model card: images up to 20 megapixels
IMAGE_TEMPLATE = (
    "<|im_start|>user\n<|vision_start|>",
    "<|vision_end|>Describe the image.<|im_end|>\n",
)
PAD_TOKEN = "<|endoftext|>"
PREFIXES = {"query": "Query", "passage": "Passage"}
DEFAULT_TASK = "retrieval.query"  # the official encode_text defaults prompt_name to "query"
# MTEB task types and prompt keys → API tasks, as MTEB's own jina-embeddings-v4 entry routes them;
# it routes programming tasks to CODE_TASK.
TASK_TYPES = {
    "Retrieval-query": "retrieval.query",
    "Retrieval-document": "retrieval.passage",
    "STS": "text-matching",
    "PairClassification": "text-matching",
    "query": "retrieval.query",
    "document": "retrieval.passage",
}
CODE_TASK = "code"


@dataclass(frozen=True)
class ServedTask:
    """A servable task: its resident adapter and whether both sides share one API name."""

    adapter: int
    symmetric: bool


def _api_table(tasks: Mapping[str, ServedTask]) -> dict[str, tuple[int, str]]:
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


class JinaV4Processor:
    """Texts and images → :class:`~uniembed.models.base.Row` objects: the tasks (added ones
    included), the tokenizer and the image processor."""

    def __init__(
        self, tokenizer: Any, image_processor: Any, config: dict[str, Any], *, name: str
    ) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.name = name
        symmetric = {*OFFICIAL_SYMMETRIC_TASKS, *config.get(SYMMETRIC_TASKS_KEY, [])}
        self.tasks = {
            task: ServedTask(i, task in symmetric) for i, task in enumerate(config["task_names"])
        }
        self.api_tasks = _api_table(self.tasks)
        self.merge_size = int(config["vision_config"].get("spatial_merge_size", 2))
        self.merge_unit = self.merge_size**2
        self.template = _template(tokenizer, int(config["image_token_id"]))
        self.min_pixels = int(image_processor.size["shortest_edge"])
        self.default_max_pixels = int(image_processor.size["longest_edge"])

    def resolve_task(self, task: str | None, prompt_name: str | None = None) -> TaskSpec:
        """API names (``retrieval.query``) or official ones (``retrieval`` + ``prompt_name``)."""
        if prompt_name is not None and prompt_name not in PREFIXES:
            raise InvalidInput(f"invalid prompt_name {prompt_name!r}; use one of {list(PREFIXES)}")
        name = task or DEFAULT_TASK
        if name in self.tasks:  # official form: task + prompt_name (default "query")
            name = task_api_names(name, self.tasks[name].symmetric)[prompt_name or QUERY]
        if name not in self.api_tasks:
            valid = ", ".join(dict.fromkeys([*self.api_tasks, *self.tasks]))  # each name once
            raise InvalidInput(f"unknown task {task!r} for {self.name}; valid tasks: {valid}")
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

    def add_task(self, name: str, adapter: int, symmetric: bool) -> None:
        """Serve task ``name`` (new or replaced) with resident adapter ``adapter``."""
        self.tasks[name] = ServedTask(adapter, symmetric)
        self.api_tasks = _api_table(self.tasks)

    def task(self, name: str) -> ServedTask:
        """Task ``name`` as served (its API names aside)."""
        if name not in self.tasks:
            raise InvalidInput(
                f"unknown task {name!r} for {self.name}; tasks: {', '.join(self.tasks)}"
            )
        return self.tasks[name]


def fixed_prefixes(name: str, symmetric: bool) -> dict[str, str]:
    """API name → prefix of each side of task ``name`` (v4's prefixes cannot be chosen)."""
    return {
        api: f"{PREFIXES[side]}: "
        for api, (_, side) in _api_table({name: ServedTask(0, symmetric)}).items()
    }


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


def load_tokenizer(snapshot: Path) -> Any:
    """The snapshot's tokenizer.json (Qwen2 byte-level BPE)."""
    from tokenizers import Tokenizer

    tokenizer_file = snapshot / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise CheckpointError(f"missing file: {tokenizer_file}")
    return Tokenizer.from_file(str(tokenizer_file))


def load_image_processor(snapshot: Path) -> Any:
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
