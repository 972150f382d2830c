"""What a call asks for, what it prepared, and how outputs become its result — all plain data.

* :class:`EncodeOptions` — the request-level options, checked against a model in ONE place
  (:meth:`EncodeOptions.check`) for the library, the HTTP API and the bulk command alike;
* :class:`Plan` — the prepared :class:`~uniembed.models.base.Row` s of a call and what to assemble
  from their outputs (no closures: a plan pickles, so rows can run in another process);
* :class:`EncodeResult` — the vectors, made by :meth:`Plan.assemble`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import torch

from uniembed.core.vectors import finalize_vectors
from uniembed.errors import ValidationFailed
from uniembed.models.base import ModelInfo, PatchGrid, Row, RowOutput

Output = Literal["single", "multi", "both"]
OUTPUTS: tuple[str, ...] = get_args(Output)


@dataclass(frozen=True)
class EncodeOptions:
    """Per-call options shared by every item of a call (the API's request-level fields).

    ``output``: ``"single"`` vectors, ``"multi"``-vectors (one per token), or ``"both"`` from the
    same forward pass. ``dimensions`` cuts single vectors (Matryoshka) and is refused with
    ``"multi"``: multi-vectors always keep the model's multi-vector width, so a cut there would be
    silently ignored.
    """

    output: Output = "single"
    dimensions: int | None = None
    late_chunking: bool = False
    truncate: bool = False
    normalized: bool = True
    max_tokens: int | None = None  # per item; None = the model's maximum
    max_pixels: int | None = None  # per image; None = the model's default
    window: int | None = None  # late chunking window in tokens; None = max_tokens
    overlap: int | None = None  # late chunking overlap; None = min(DEFAULT_OVERLAP, window // 2)

    @property
    def wants_multivectors(self) -> bool:
        return self.output in ("multi", "both")

    def check(self, info: ModelInfo) -> None:
        """Raise :class:`ValidationFailed` (one message per rule) if these options do not fit
        ``info``.

        >>> from uniembed.testing.fake import FakeModel
        >>> options = EncodeOptions(output="multi", dimensions=8)
        >>> options.check(FakeModel().info)  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        uniembed.errors.ValidationFailed: dimensions applies to single vectors; multi-vectors keep
        their 8 dimensions (drop dimensions, or ask for output 'both')
        """
        if self.output not in OUTPUTS:
            raise ValidationFailed(
                f"output must be one of {', '.join(OUTPUTS)}; got {self.output!r}"
            )
        check_dimensions(self.dimensions, info)
        if self.wants_multivectors and info.multivector_dim is None:
            raise ValidationFailed(f"{info.name} has no multi-vector output")
        if self.output == "multi" and self.dimensions is not None:
            raise ValidationFailed(
                "dimensions applies to single vectors; multi-vectors keep their "
                f"{info.multivector_dim} dimensions (drop dimensions, or ask for output 'both')"
            )
        if self.wants_multivectors and self.late_chunking:
            raise ValidationFailed(
                "late_chunking gives one vector per chunk; it cannot return multi-vectors"
            )
        if self.max_tokens is not None and not 1 <= self.max_tokens <= info.max_tokens:
            raise ValidationFailed(
                f"max_tokens must be between 1 and {info.max_tokens}, got {self.max_tokens}"
            )


def check_dimensions(
    dimensions: int | None, info: ModelInfo, *, trained_only: bool = False
) -> None:
    """Any size 1…dim is a valid Matryoshka prefix; ``trained_only`` allows only the trained sizes
    (the official ``truncate_dim``)."""
    if dimensions is None:
        return
    if isinstance(dimensions, bool) or not isinstance(dimensions, int):
        raise ValidationFailed(f"dimensions must be an integer, got {dimensions!r}")
    if trained_only and dimensions not in info.matryoshka_dims:
        raise ValidationFailed(
            f"truncate_dim {dimensions} is not one of {list(info.matryoshka_dims)}"
        )
    if not 1 <= dimensions <= info.dim:
        raise ValidationFailed(f"dimensions must be between 1 and {info.dim}, got {dimensions}")


@dataclass
class EncodeResult:
    """The vectors of a call, one entry per output item, and the tokens each item cost.

    ``embeddings`` holds what was asked for: single vectors ``(dim,)`` (``output`` single or both)
    or multi-vectors ``(tokens, multivector_dim)`` (``output="multi"``). With ``output="both"``,
    ``multivectors`` holds the multi-vectors beside them. ``patch_grids`` says, for image items,
    where the image patches sit among the multi-vector rows (``None`` for text).
    """

    embeddings: list[torch.Tensor]
    token_counts: list[int]
    multivectors: list[torch.Tensor] | None = None
    patch_grids: list[PatchGrid | None] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return sum(self.token_counts)

    # Behave like the official v3 ``encode`` result (a list / array of vectors) where it is used so.
    def __len__(self) -> int:
        return len(self.embeddings)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.embeddings[index]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.embeddings)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """``np.asarray(result)``: a (items, dim) array of single vectors."""
        if any(e.dim() != 1 for e in self.embeddings):
            raise TypeError("multi-vector results have one matrix per item; use .embeddings")
        array = torch.stack(self.embeddings).numpy()
        return array.astype(dtype) if dtype is not None else array


@dataclass(frozen=True)
class ChunkPart:
    """One pooled span of a late-chunking row: the mean of ``tokens`` tokens of chunk ``chunk``."""

    chunk: int
    tokens: int


@dataclass(frozen=True)
class ChunkPooling:
    """How late-chunking rows' span means combine into one raw vector per chunk."""

    parts: tuple[tuple[ChunkPart, ...], ...]  # per row, what each of its span means belongs to
    tokens_per_chunk: tuple[int, ...]

    def pool(self, outputs: Sequence[RowOutput]) -> torch.Tensor:
        """Raw (not normalised) chunk means → (chunks, dim) float32."""
        if len(outputs) != len(self.parts):
            raise ValueError(f"got {len(outputs)} outputs for {len(self.parts)} rows")
        pieces: list[list[tuple[torch.Tensor, int]]] = [[] for _ in self.tokens_per_chunk]
        for output, parts in zip(outputs, self.parts):
            for mean, part in zip(output.pooled, parts):  # mean: (dim,)
                pieces[part.chunk].append((mean, part.tokens))
        return torch.stack([_weighted_mean(p) for p in pieces])  # (chunks, dim)


def _weighted_mean(pieces: list[tuple[torch.Tensor, int]]) -> torch.Tensor:
    """Mean of a chunk from the means of its pieces (one piece: returned unchanged, bit-exact)."""
    if len(pieces) == 1:
        return pieces[0][0].to(torch.float32)
    total = sum(count for _, count in pieces)
    summed = sum(mean.to(torch.float64) * count for mean, count in pieces)
    return (summed / total).to(torch.float32)  # type: ignore[union-attr]


@dataclass(frozen=True)
class Plan:
    """The prepared rows of one call and what to make of their outputs (plain, picklable data).

    Without ``chunks`` every row is one output item; with it (late chunking) the rows are a
    document's windows and each chunk is one output item.
    """

    rows: tuple[Row, ...]
    output: Output
    dimensions: int | None
    normalized: bool
    chunks: ChunkPooling | None = None

    @property
    def token_counts(self) -> list[int]:
        if self.chunks is not None:
            return list(self.chunks.tokens_per_chunk)
        return [row.num_tokens for row in self.rows]

    def assemble(self, outputs: Sequence[RowOutput]) -> EncodeResult:
        """Pool, cut and normalise the rows' outputs into the call's result."""
        if len(outputs) != len(self.rows):
            raise ValueError(f"got {len(outputs)} outputs for {len(self.rows)} rows")
        if self.chunks is not None:
            vectors = finalize_vectors(self.chunks.pool(outputs), self.dimensions, self.normalized)
            return EncodeResult(list(vectors), self.token_counts, patch_grids=[None] * len(vectors))
        multivectors = [_multivector(out) for out in outputs] if self.output != "single" else None
        grids = [row.patches for row in self.rows]
        if self.output == "multi":
            return EncodeResult(multivectors, self.token_counts, patch_grids=grids)  # type: ignore[arg-type]
        singles = [
            finalize_vectors(out.pooled[0], self.dimensions, self.normalized) for out in outputs
        ]
        return EncodeResult(singles, self.token_counts, multivectors, grids)


def _multivector(output: RowOutput) -> torch.Tensor:
    if output.multivector is None:
        raise ValueError("the model returned no multi-vector for a row that asked for one")
    return output.multivector
