"""A deterministic stand-in model that honours the model contract; for fast tests of code that
does not care which model family runs (engine, chunking, server, CLI).

Tokens are characters; a token's state is the running mean of the embeddings of the tokens up to
it (causal, so every token sees its left context, like the real decoders), shifted per adapter.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from uniembed.core.vectors import normalize
from uniembed.errors import InvalidInput
from uniembed.models.base import (
    ImageFeatures,
    ModelInfo,
    PatchGrid,
    Row,
    RowOutput,
    Span,
    TaskSpec,
    TokenizedText,
    default_spans,
)

FAKE_TASKS = {
    "retrieval.query": (0, "Query: "),
    "retrieval.passage": (0, "Passage: "),
    "text-matching": (1, "Query: "),
    "code.query": (2, "Query: "),
    "code.passage": (2, "Passage: "),
}
BOS, EOS, IMAGE = 1, 2, 3
VOCAB = 512


class FakeModel:
    """Contract-complete toy model: 32-d vectors, 8-d multi-vectors, text and images."""

    def __init__(
        self, name: str = "fake-model", dim: int = 32, max_tokens: int = 512, seed: int = 0
    ) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.embeddings = torch.randn(VOCAB, dim, generator=generator)
        self.adapter_shift = torch.randn(
            len({a for a, _ in FAKE_TASKS.values()}), dim, generator=generator
        )
        self.projector = torch.randn(dim, 8, generator=generator)
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.info = ModelInfo(
            name=name,
            family="fake",
            dim=dim,
            matryoshka_dims=(8, 16, dim),
            max_tokens=max_tokens,
            tasks=tuple(FAKE_TASKS),
            default_task="retrieval.query",
            multivector_dim=8,
            modalities=frozenset({"text", "image"}),
        )
        self.forward_calls: list[int] = []  # batch sizes seen, for tests of the batching
        self.processor = self  # its CPU side uses none of the forward's state

    def resolve_task(self, task: str | None, prompt_name: str | None = None) -> TaskSpec:
        name = task or self.info.default_task
        if prompt_name is not None and "." not in name:
            name = f"{name}.{prompt_name}"
        if name not in FAKE_TASKS:
            raise InvalidInput(f"unknown task {task!r}; valid tasks: {', '.join(FAKE_TASKS)}")
        adapter, prefix = FAKE_TASKS[name]
        return TaskSpec(name=name, adapter=adapter, prefix=prefix)

    def tokenize(self, text: str) -> TokenizedText:
        ids = [BOS] + [4 + ord(ch) % (VOCAB - 4) for ch in text] + [EOS]
        offsets = [(0, 0)] + [(i, i + 1) for i in range(len(text))] + [(0, 0)]
        special = [True] + [False] * len(text) + [True]
        return TokenizedText(ids, offsets, special)

    def text_sequence(
        self, ids: list[int], task: TaskSpec, spans: Sequence[Span] | None = None
    ) -> Row:
        tensor = torch.tensor(ids, dtype=torch.long)
        return Row(tensor, task.adapter, default_spans(len(ids), spans))

    def image_sequence(
        self, image: Image.Image, task: TaskSpec, max_pixels: int | None = None
    ) -> Row:
        pixels = torch.from_numpy(
            np.asarray(image.convert("L").resize((4, 4)), dtype=np.int64).reshape(-1)
        )
        ids = [BOS, IMAGE] + [4 + int(p) % (VOCAB - 4) for p in pixels] + [IMAGE, EOS]
        grid = ImageFeatures(pixel_values=pixels.float().unsqueeze(-1), grid_thw=(1, 4, 4))
        patches = PatchGrid(start=2, height=4, width=4)  # the 16 pixel tokens
        return Row(
            torch.tensor(ids), task.adapter, ((1, len(ids) - 1),), image=grid, patches=patches
        )

    def forward(self, batch: Sequence[Row]) -> list[RowOutput]:
        self.forward_calls.append(len(batch))
        outputs = []
        for row in batch:
            emb = self.embeddings[row.input_ids]  # (tokens, dim)
            counts = torch.arange(1, row.num_tokens + 1, dtype=torch.float32).unsqueeze(-1)
            states = emb.cumsum(0) / counts
            if row.adapter >= 0:
                states = states + self.adapter_shift[row.adapter]
            pooled = torch.stack([states[s:e].mean(0) for s, e in row.spans])
            multivector = normalize(states @ self.projector) if row.multivector else None
            outputs.append(RowOutput(pooled, multivector))
        return outputs
