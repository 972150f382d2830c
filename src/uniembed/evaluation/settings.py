"""Ways to score one cached encoding — each a small setting object that builds an index.

A :class:`Setting` turns the corpus :class:`~uniembed.evaluation.encoded.Encodings` into a
:class:`SettingIndex` (the representation it would store: cut, quantised, pooled or binarised
vectors), and the index answers one query at a time with its best ``depth`` items. Settings are
named by short specs (:func:`parse_settings`)::

    dense[:DIM|:all]      cosine on single vectors cut to DIM (Matryoshka); default: full size
    dense-int8[:DIM]      the same vectors quantised to int8 (per-dimension ranges of the corpus)
    dense-binary[:DIM]    sign bits, scored by Hamming distance (the API's ``ubinary``)
    maxsim                exact late interaction (MaxSim) on float32 multi-vectors
    maxsim-fp16           the same with multi-vectors stored as float16
    maxsim-pool:F         multi-vectors token-pooled by factor F (2, 3, …), then MaxSim
    maxsim-binary[:N]     multi-vectors as sign bits: Hamming MaxSim picks N candidates
                          (default 100), float MaxSim reranks them
    two-stage[:DIM[:N]]   dense (DIM, default the smallest Matryoshka size) picks N candidates
                          (default 100), exact MaxSim reranks them
    muvera[:N]            MUVERA encodings of the multi-vectors pick N candidates (default
                          100), exact MaxSim reranks them
    all                   dense at every Matryoshka size, dense-int8, dense-binary, maxsim,
                          maxsim-fp16, maxsim-pool:2, maxsim-pool:3, maxsim-binary, two-stage,
                          muvera

These are studies of codecs and stages in memory, on the kernels and codecs search uses
(:mod:`uniembed.core`): MaxSim (``maxsim_ragged``), Hamming MaxSim, token pooling, float16 and
binarisation. What search itself returns in each of its modes is measured by the ``search:``
settings (:mod:`uniembed.evaluation.searched`), which run a real index. The spec parser is
:mod:`uniembed.evaluation.specs`. A two-stage setting returns its candidates only: with N below the
largest cut-off, recall at that cut-off is what the setting really finds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from uniembed.core.vectors import finalize_vectors
from uniembed.evaluation.encoded import Encodings

DEFAULT_CANDIDATES = 100
FLOAT32, FLOAT16 = 4, 2


@dataclass(frozen=True)
class QueryVectors:
    """One query's full-size single vector and its multi-vector."""

    single: torch.Tensor  # (dim,)
    multi: torch.Tensor  # (tokens, multivector_dim)


class SettingIndex(Protocol):
    """A corpus in one setting's representation."""

    stored_bytes: float  # per corpus item: everything this setting keeps (rerank vectors too)
    scanned_bytes: float  # per corpus item: what the first stage of one query reads

    def search(self, query: QueryVectors, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and corpus positions of the best ``depth`` items, best first."""
        ...

    def close(self) -> None:
        """Release what the index holds (files, a store)."""
        ...


class InMemory:
    """An index that is only tensors: nothing to release."""

    def close(self) -> None:
        """Nothing to release."""


class Setting(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def family(self) -> str:  # "dense" or "late": how the chart colours it
        ...

    def build(self, corpus: Encodings) -> SettingIndex: ...


def top(
    scores: torch.Tensor, depth: int, positions: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``depth`` best scores and their positions (mapped through ``positions`` if given).

    >>> top(torch.tensor([0.1, 0.9, 0.5]), 2)
    (tensor([0.9000, 0.5000]), tensor([1, 2]))
    """
    values, indices = torch.topk(scores, min(depth, scores.shape[0]))
    return values, indices if positions is None else positions[indices]


# --------------------------------------------------------------------- dense
@dataclass(frozen=True)
class Dense:
    """Single vectors cut to ``dimensions`` and stored as float32, int8 or sign bits."""

    dimensions: int
    precision: str = "float32"  # "float32" | "int8" | "binary"

    @property
    def name(self) -> str:
        kind = "dense" if self.precision == "float32" else f"dense-{self.precision}"
        return f"{kind}:{self.dimensions}"

    @property
    def family(self) -> str:
        return "dense"

    def build(self, corpus: Encodings) -> SettingIndex:
        vectors = finalize_vectors(corpus.single, self.dimensions)  # (items, d)
        if self.precision == "int8":
            return Int8Index(*quantize_int8(vectors), self.dimensions)
        if self.precision == "binary":
            from uniembed.core.vectors import binarize

            return BinaryIndex(binarize(vectors), self.dimensions)
        return FloatIndex(vectors, self.dimensions)


class FloatIndex(InMemory):
    def __init__(self, vectors: torch.Tensor, dimensions: int) -> None:
        self.vectors = vectors  # (items, d)
        self.dimensions = dimensions
        self.stored_bytes = self.scanned_bytes = float(FLOAT32 * dimensions)

    def scores(self, query: QueryVectors) -> torch.Tensor:
        return self.vectors @ finalize_vectors(query.single, self.dimensions)  # (items,)

    def search(self, query: QueryVectors, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        return top(self.scores(query), depth)


def quantize_int8(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-dimension scalar quantisation to int8 over the range the vectors span:
    ``x ≈ low + step * (code + 128)``. Returns ``(codes, low, step)``.

    >>> codes, low, step = quantize_int8(torch.tensor([[0.0, -1.0], [1.0, 1.0]]))
    >>> codes.tolist(), (low + step * (codes.float() + 128)).tolist()
    ([[-128, -128], [127, 127]], [[0.0, -1.0], [1.0, 1.0]])
    """
    low = vectors.min(0).values
    step = ((vectors.max(0).values - low) / 255).clamp_min(1e-12)
    codes = torch.round((vectors - low) / step).clamp(0, 255) - 128
    return codes.to(torch.int8), low, step


class Int8Index(InMemory):
    def __init__(
        self, codes: torch.Tensor, low: torch.Tensor, step: torch.Tensor, dimensions: int
    ) -> None:
        self.codes, self.low, self.step, self.dimensions = codes, low, step, dimensions
        self.stored_bytes = self.scanned_bytes = float(dimensions)  # + two float vectors per corpus

    def search(self, query: QueryVectors, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        q = finalize_vectors(query.single, self.dimensions)
        # q · (low + step * (code + 128)) without materialising the dequantised corpus
        scores = self.codes.float() @ (q * self.step) + q @ (self.low + 128 * self.step)
        return top(scores, depth)


class BinaryIndex(InMemory):
    """Sign bits of the cut vectors; the score of an item is the dot product of the ±1 vectors,
    ``d - 2 * Hamming distance`` — :func:`~uniembed.core.scores.hamming_maxsim_ragged` with one
    row per item and per query."""

    def __init__(self, codes: torch.Tensor, dimensions: int) -> None:
        self.codes, self.dimensions = codes, dimensions  # (items, ceil(d / 8)) uint8
        self.ones = torch.ones(codes.shape[0], dtype=torch.int64)
        self.stored_bytes = self.scanned_bytes = float(codes.shape[1])

    def search(self, query: QueryVectors, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        from uniembed.core.scores import hamming_maxsim_ragged
        from uniembed.core.vectors import binarize

        bits = binarize(finalize_vectors(query.single, self.dimensions)[None])  # (1, bytes)
        return top(hamming_maxsim_ragged(bits, self.codes, self.ones, dim=self.dimensions), depth)


# --------------------------------------------------------------------- late interaction
@dataclass(frozen=True)
class MaxSim:
    """Exact late interaction on the stored multi-vectors (token-pooled by ``pool_factor`` > 1)."""

    pool_factor: int = 1
    storage: str = "float32"  # "float32" | "float16"

    @property
    def name(self) -> str:
        if self.pool_factor > 1:
            return f"maxsim-pool:{self.pool_factor}" + (
                "" if self.storage == "float32" else "-fp16"
            )
        return "maxsim" if self.storage == "float32" else "maxsim-fp16"

    @property
    def family(self) -> str:
        return "late"

    def build(self, corpus: Encodings) -> SettingIndex:
        from uniembed.core.token_pooling import pool_tokens
        from uniembed.core.vectors import to_float16

        rows, lengths = corpus.multi, corpus.lengths  # (all tokens, d), (items,)
        if self.pool_factor > 1:
            pooled = [pool_tokens(doc, self.pool_factor) for doc in corpus.multivectors()]
            rows, lengths = torch.cat(pooled), torch.tensor([p.shape[0] for p in pooled])
        width = FLOAT32
        if self.storage == "float16":
            rows, width = to_float16(rows), FLOAT16
        return LateIndex(rows, lengths, float(lengths.float().mean()) * rows.shape[1] * width)


class LateIndex(InMemory):
    def __init__(self, rows: torch.Tensor, lengths: torch.Tensor, bytes_per_item: float) -> None:
        self.rows, self.lengths = rows, lengths  # documents back to back
        self.stored_bytes = self.scanned_bytes = bytes_per_item

    def search(self, query: QueryVectors, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        from uniembed.core.scores import maxsim_ragged

        return top(maxsim_ragged(query.multi, self.rows, self.lengths), depth)


class Reranker:
    """Exact MaxSim on a few candidates, from the float multi-vectors (the second stage)."""

    def __init__(self, corpus: Encodings) -> None:
        self.docs, self.lengths = corpus.multivectors(), corpus.lengths
        self.bytes_per_item = float(corpus.lengths.float().mean()) * corpus.multi.shape[1] * FLOAT32

    def rerank(
        self, query: torch.Tensor, candidates: torch.Tensor, depth: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The best ``depth`` of ``candidates`` (corpus positions) by exact MaxSim, best first."""
        from uniembed.core.scores import maxsim_ragged

        rows = torch.cat([self.docs[i] for i in candidates.tolist()])
        scores = maxsim_ragged(query, rows, self.lengths[candidates])
        return top(scores, depth, candidates)


@dataclass(frozen=True)
class BinaryMaxSim:
    """Binarised multi-vectors: Hamming MaxSim picks ``candidates``, float MaxSim reranks them."""

    candidates: int = DEFAULT_CANDIDATES

    @property
    def name(self) -> str:
        return f"maxsim-binary:{self.candidates}"

    @property
    def family(self) -> str:
        return "late"

    def build(self, corpus: Encodings) -> SettingIndex:
        from uniembed.core.vectors import binarize

        return BinaryLateIndex(
            binarize(corpus.multi), corpus.lengths, Reranker(corpus), self.candidates
        )


class BinaryLateIndex(InMemory):
    def __init__(
        self, codes: torch.Tensor, lengths: torch.Tensor, reranker: Reranker, candidates: int
    ) -> None:
        self.codes, self.lengths, self.reranker, self.candidates = (
            codes,
            lengths,
            reranker,
            candidates,
        )
        self.scanned_bytes = float(lengths.float().mean()) * codes.shape[1]  # one bit per dimension
        self.stored_bytes = self.scanned_bytes + reranker.bytes_per_item

    def search(self, query: QueryVectors, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        from uniembed.core.scores import hamming_maxsim_ragged
        from uniembed.core.vectors import binarize

        dim = query.multi.shape[1]
        coarse = hamming_maxsim_ragged(binarize(query.multi), self.codes, self.lengths, dim=dim)
        _, candidates = top(coarse, self.candidates)
        return self.reranker.rerank(query.multi, candidates, depth)


@dataclass(frozen=True)
class MuveraStage:
    """MUVERA encodings of the multi-vectors (:class:`uniembed.core.muvera.Muvera`: 10 draws of
    16 SimHash buckets × 16 projected dimensions = 2,560 floats) pick ``candidates`` by dot
    product; exact MaxSim reranks them."""

    candidates: int = DEFAULT_CANDIDATES

    @property
    def name(self) -> str:
        return f"muvera:{self.candidates}"

    @property
    def family(self) -> str:
        return "late"

    def build(self, corpus: Encodings) -> SettingIndex:
        from uniembed.core.muvera import Muvera

        muvera = Muvera(corpus.multi.shape[1])
        docs = list(corpus.multivectors())
        encodings = torch.cat(
            [muvera.documents(docs[start : start + 256]) for start in range(0, len(docs), 256)]
        )
        return MuveraIndex(muvera, encodings, Reranker(corpus), self.candidates)


class MuveraIndex(InMemory):
    def __init__(
        self, muvera: Any, encodings: torch.Tensor, reranker: Reranker, candidates: int
    ) -> None:
        self.muvera, self.encodings = muvera, encodings  # (items, muvera.output_dim)
        self.reranker, self.candidates = reranker, candidates
        self.scanned_bytes = float(encodings.shape[1] * FLOAT32)
        self.stored_bytes = self.scanned_bytes + reranker.bytes_per_item

    def search(self, query: QueryVectors, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        _, candidates = top(self.encodings @ self.muvera.query(query.multi), self.candidates)
        return self.reranker.rerank(query.multi, candidates, depth)


@dataclass(frozen=True)
class TwoStage:
    """Dense candidates (float32 at ``dimensions``), reranked by exact MaxSim."""

    dimensions: int
    candidates: int = DEFAULT_CANDIDATES

    @property
    def name(self) -> str:
        return f"two-stage:{self.dimensions}:{self.candidates}"

    @property
    def family(self) -> str:
        return "late"

    def build(self, corpus: Encodings) -> SettingIndex:
        dense = FloatIndex(finalize_vectors(corpus.single, self.dimensions), self.dimensions)
        return TwoStageIndex(dense, Reranker(corpus), self.candidates)


class TwoStageIndex(InMemory):
    def __init__(self, dense: FloatIndex, reranker: Reranker, candidates: int) -> None:
        self.dense, self.reranker, self.candidates = dense, reranker, candidates
        self.scanned_bytes = dense.scanned_bytes
        self.stored_bytes = dense.stored_bytes + reranker.bytes_per_item

    def search(self, query: QueryVectors, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        _, candidates = top(self.dense.scores(query), self.candidates)
        return self.reranker.rerank(query.multi, candidates, depth)
