"""Ways to score one cached encoding — each a small setting object that builds an index.

A :class:`Setting` turns the corpus :class:`~uniembed.evaluation.encodings.Encodings` into an
:class:`Index` (the representation it would store: cut, quantised, pooled or binarised vectors),
and the index answers one query at a time with its best ``depth`` items. Settings are named by
short specs (:func:`parse_settings`)::

    dense[:DIM|:all]      cosine on single vectors cut to DIM (Matryoshka); default: full size
    dense-int8[:DIM]      the same vectors quantised to int8 (per-dimension ranges of the corpus)
    dense-binary[:DIM]    sign bits, scored by Hamming distance (the API's ``ubinary``)
    maxsim                exact late interaction (MaxSim) on float32 multi-vectors
    maxsim-fp16           the same with multi-vectors stored as float16
    maxsim-pool:F         multi-vectors token-pooled by factor F (2, 3, …), then MaxSim
    maxsim-binary[:N]     binarised multi-vectors, Hamming MaxSim for N candidates (default 100),
                          then float MaxSim on those
    two-stage[:DIM[:N]]   dense (DIM, default the smallest Matryoshka size) for N candidates
                          (default 100), then exact MaxSim on those
    all                   dense at every Matryoshka size, dense-int8, dense-binary, maxsim,
                          maxsim-fp16, maxsim-pool:2, maxsim-pool:3, maxsim-binary, two-stage

MaxSim, token pooling and binarisation come from :mod:`uniembed.retrieval` (the search code), so
what is measured here is what search runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from uniembed.errors import InvalidInput
from uniembed.evaluation.encodings import Encodings
from uniembed.models.base import ModelInfo
from uniembed.pooling import finalize_vectors

DEFAULT_CANDIDATES = 100
BLOCK_ROWS = 1 << 18  # padded multi-vector rows scored per MaxSim call (128 MiB of float32 at 128-d)
FLOAT32, FLOAT16 = 4, 2
BlockScorer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (query, docs, mask)


@dataclass(frozen=True)
class QueryVectors:
    """One query's full-size single vector and its multi-vector."""

    single: torch.Tensor  # (dim,)
    multi: torch.Tensor  # (tokens, multivector_dim)


class Index(Protocol):
    """A corpus in one setting's representation."""

    stored_bytes: float  # per corpus item: everything this setting keeps (rerank vectors too)
    scanned_bytes: float  # per corpus item: what the first stage of one query reads

    def search(self, query: QueryVectors, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and corpus positions of the best ``depth`` items, best first."""
        ...


class Setting(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def family(self) -> str:  # "dense" or "late": how the chart colours it
        ...

    def build(self, corpus: Encodings) -> Index: ...


def top(scores: torch.Tensor, depth: int, positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
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

    def build(self, corpus: Encodings) -> Index:
        vectors = finalize_vectors(corpus.single, self.dimensions)  # (items, d)
        if self.precision == "int8":
            return Int8Index(*quantize_int8(vectors), self.dimensions)
        if self.precision == "binary":
            return BinaryIndex(pack_bits(vectors), self.dimensions)
        return FloatIndex(vectors, self.dimensions)


class FloatIndex:
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


class Int8Index:
    def __init__(self, codes: torch.Tensor, low: torch.Tensor, step: torch.Tensor, dimensions: int) -> None:
        self.codes, self.low, self.step, self.dimensions = codes, low, step, dimensions
        self.stored_bytes = self.scanned_bytes = float(dimensions)  # + two float vectors per corpus

    def search(self, query: QueryVectors, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        q = finalize_vectors(query.single, self.dimensions)
        # q · (low + step * (code + 128)) without materialising the dequantised corpus
        scores = self.codes.float() @ (q * self.step) + q @ (self.low + 128 * self.step)
        return top(scores, depth)


_POPCOUNT = torch.tensor([byte.bit_count() for byte in range(256)], dtype=torch.int32)


def pack_bits(vectors: torch.Tensor) -> torch.Tensor:
    """Sign bits (value > 0), 8 per byte, most significant first: the API's ``ubinary`` bytes.

    >>> pack_bits(torch.tensor([[1.0, -1, 0, 2, 0.5, -0.5, 3, 4]])).tolist()
    [[155]]
    """
    from uniembed.encoding import pack_sign_bits

    return torch.from_numpy(pack_sign_bits(vectors.numpy()))


def hamming(codes: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Bits that differ between each row of ``codes`` (items, bytes) and ``query`` (bytes,).

    >>> hamming(torch.tensor([[0b1111_0000], [0b0000_0001]], dtype=torch.uint8), torch.tensor([0], dtype=torch.uint8)).tolist()
    [4, 1]
    """
    return _POPCOUNT[(codes ^ query).long()].sum(-1)


class BinaryIndex:
    def __init__(self, codes: torch.Tensor, dimensions: int) -> None:
        self.codes, self.dimensions = codes, dimensions  # (items, ceil(d / 8)) uint8
        self.stored_bytes = self.scanned_bytes = float(codes.shape[1])

    def search(self, query: QueryVectors, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        bits = pack_bits(finalize_vectors(query.single, self.dimensions)[None])[0]
        # the dot product of the ±1 vectors: d - 2 * Hamming distance
        return top((self.dimensions - 2 * hamming(self.codes, bits)).float(), depth)


# --------------------------------------------------------------------- late interaction
class PaddedDocs:
    """Multi-vectors padded into blocks of similar length (sorted, so little padding), each
    ``(docs, tokens, dim)`` with a ``(docs, tokens)`` mask and the corpus positions of its docs."""

    def __init__(self, docs: Sequence[torch.Tensor], block_rows: int = BLOCK_ROWS) -> None:
        lengths = torch.tensor([d.shape[0] for d in docs])
        order = torch.argsort(lengths, stable=True)
        self.blocks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        start = 0
        while start < len(order):  # grow a block while its padded rows fit in block_rows
            stop = start + 1
            while stop < len(order) and (stop - start + 1) * int(lengths[order[stop]]) <= block_rows:
                stop += 1
            positions = order[start:stop]
            longest = int(lengths[order[stop - 1]])  # sorted: the last is the longest
            self.blocks.append((*pad_multivectors([docs[i] for i in positions.tolist()], longest), positions))
            start = stop

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return iter(self.blocks)


def pad_multivectors(docs: Sequence[torch.Tensor], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(docs, length, dim)`` zero-padded vectors (``length``: the longest by default) and the
    ``(docs, length)`` mask of their real rows.

    >>> padded, mask = pad_multivectors([torch.ones(1, 2), torch.ones(3, 2)])
    >>> tuple(padded.shape), mask.tolist()
    ((2, 3, 2), [[True, False, False], [True, True, True]])
    """
    length = max(d.shape[0] for d in docs) if length is None else length
    padded = torch.zeros(len(docs), length, docs[0].shape[1], dtype=docs[0].dtype)
    mask = torch.zeros(len(docs), length, dtype=torch.bool)
    for row, doc in enumerate(docs):
        padded[row, : doc.shape[0]] = doc
        mask[row, : doc.shape[0]] = True
    return padded, mask


def _late_scores(query: torch.Tensor, docs: PaddedDocs, items: int, scorer: BlockScorer) -> torch.Tensor:
    """``scorer(query, block, mask)`` over every block, back in corpus order → (items,)."""
    scores = torch.empty(items)
    for vectors, mask, positions in docs:
        scores[positions] = scorer(query, vectors, mask).float()
    return scores


def maxsim_rerank(query: torch.Tensor, docs: Sequence[torch.Tensor], candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact MaxSim of ``query`` with the ``candidates`` (corpus positions) → sorted scores, positions."""
    from uniembed.retrieval.scores import maxsim

    chosen = [docs[i] for i in candidates.tolist()]
    vectors, mask = pad_multivectors(chosen, max(d.shape[0] for d in chosen))
    return top(maxsim(query, vectors, mask).float(), len(chosen), candidates)


@dataclass(frozen=True)
class MaxSim:
    """Exact late interaction on the stored multi-vectors (token-pooled by ``pool_factor`` > 1)."""

    pool_factor: int = 1
    storage: str = "float32"  # "float32" | "float16"

    @property
    def name(self) -> str:
        if self.pool_factor > 1:
            return f"maxsim-pool:{self.pool_factor}" + ("" if self.storage == "float32" else "-fp16")
        return "maxsim" if self.storage == "float32" else "maxsim-fp16"

    @property
    def family(self) -> str:
        return "late"

    def build(self, corpus: Encodings) -> Index:
        docs = corpus.multivectors()
        if self.pool_factor > 1:
            from uniembed.retrieval.compression import pool_tokens

            docs = [pool_tokens(doc, self.pool_factor) for doc in docs]
        if self.storage == "float16":
            docs = [doc.half() for doc in docs]
        width = FLOAT32 if self.storage == "float32" else FLOAT16
        rows = sum(d.shape[0] for d in docs) / len(docs)
        return LateIndex(PaddedDocs(docs), len(docs), rows * corpus.multi.shape[1] * width)


class LateIndex:
    def __init__(self, docs: PaddedDocs, items: int, bytes_per_item: float) -> None:
        self.docs, self.items = docs, items
        self.stored_bytes = self.scanned_bytes = bytes_per_item

    def search(self, query: QueryVectors, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        from uniembed.retrieval.scores import maxsim

        dtype = self.docs.blocks[0][0].dtype
        return top(_late_scores(query.multi.to(dtype), self.docs, self.items, maxsim), depth)


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

    def build(self, corpus: Encodings) -> Index:
        from uniembed.retrieval.compression import binarize

        docs = corpus.multivectors()
        codes = [binarize(doc) for doc in docs]
        rows = sum(d.shape[0] for d in docs) / len(docs)
        return BinaryLateIndex(PaddedDocs(codes), docs, rows * codes[0].shape[1],
                               rows * corpus.multi.shape[1] * FLOAT32, self.candidates)


class BinaryLateIndex:
    def __init__(self, codes: PaddedDocs, docs: list[torch.Tensor], code_bytes: float,
                 float_bytes: float, candidates: int) -> None:
        self.codes, self.docs, self.candidates = codes, docs, candidates
        self.scanned_bytes = code_bytes
        self.stored_bytes = code_bytes + float_bytes

    def search(self, query: QueryVectors, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        from uniembed.retrieval.compression import binarize, hamming_maxsim

        coarse = _late_scores(binarize(query.multi), self.codes, len(self.docs), hamming_maxsim)
        _, candidates = top(coarse, max(depth, self.candidates))
        return _first(maxsim_rerank(query.multi, self.docs, candidates), depth)


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

    def build(self, corpus: Encodings) -> Index:
        dense = FloatIndex(finalize_vectors(corpus.single, self.dimensions), self.dimensions)
        rows = float(corpus.lengths.float().mean())
        return TwoStageIndex(dense, corpus.multivectors(), rows * corpus.multi.shape[1] * FLOAT32,
                             self.candidates)


class TwoStageIndex:
    def __init__(self, dense: FloatIndex, docs: list[torch.Tensor], float_bytes: float, candidates: int) -> None:
        self.dense, self.docs, self.candidates = dense, docs, candidates
        self.scanned_bytes = dense.scanned_bytes
        self.stored_bytes = dense.stored_bytes + float_bytes

    def search(self, query: QueryVectors, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        _, candidates = top(self.dense.scores(query), max(depth, self.candidates))
        return _first(maxsim_rerank(query.multi, self.docs, candidates), depth)


def _first(ranked: tuple[torch.Tensor, torch.Tensor], depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    return ranked[0][:depth], ranked[1][:depth]


# --------------------------------------------------------------------- specs
def default_specs(info: ModelInfo) -> list[str]:
    """What ``all`` means for a model (late-interaction settings only where it has multi-vectors)."""
    specs = ["dense:all", "dense-int8", "dense-binary"]
    if info.multivector_dim is not None:
        specs += ["maxsim", "maxsim-fp16", "maxsim-pool:2", "maxsim-pool:3", "maxsim-binary", "two-stage"]
    return specs


def parse_settings(specs: Sequence[str], info: ModelInfo) -> list[Setting]:
    """Settings from specs (see the module docstring), in order, duplicates dropped.

    >>> from uniembed.testing.fake import FakeModel
    >>> [s.name for s in parse_settings(["dense:all", "two-stage", "maxsim-pool:2"], FakeModel().info)]
    ['dense:8', 'dense:16', 'dense:32', 'two-stage:8:100', 'maxsim-pool:2']
    """
    settings: dict[str, Setting] = {}
    for spec in specs:
        expanded = default_specs(info) if spec.strip() == "all" else [spec]
        for one in expanded:
            for setting in _parse_one(one.strip(), info):
                settings.setdefault(setting.name, setting)
    if not settings:
        raise InvalidInput("no settings given")
    return list(settings.values())


def _parse_one(spec: str, info: ModelInfo) -> list[Setting]:
    kind, *args = spec.split(":")
    if kind in ("dense", "dense-int8", "dense-binary"):
        precision = {"dense": "float32", "dense-int8": "int8", "dense-binary": "binary"}[kind]
        if args == ["all"]:
            return [Dense(d, precision) for d in _matryoshka(info)]
        return [Dense(_dimensions(_args(spec, args, 1, [info.dim])[0], info, spec), precision)]
    late = {"maxsim", "maxsim-fp16", "maxsim-pool", "maxsim-binary", "two-stage"}
    if kind in late and info.multivector_dim is None:
        raise InvalidInput(f"setting {spec!r} needs multi-vectors; {info.name} has none")
    if kind in ("maxsim", "maxsim-fp16"):
        _args(spec, args, 0, [])
        return [MaxSim(storage="float32" if kind == "maxsim" else "float16")]
    if kind == "maxsim-pool":
        (factor,) = _args(spec, args, 1, [None])
        if factor is None or factor < 2:
            raise InvalidInput(f"setting {spec!r}: give a pool factor of 2 or more, e.g. maxsim-pool:2")
        return [MaxSim(pool_factor=factor)]
    if kind == "maxsim-binary":
        (candidates,) = _args(spec, args, 1, [DEFAULT_CANDIDATES])
        return [BinaryMaxSim(_positive(candidates, spec))]
    if kind == "two-stage":
        dimensions, candidates = _args(spec, args, 2, [min(_matryoshka(info)), DEFAULT_CANDIDATES])
        return [TwoStage(_dimensions(dimensions, info, spec), _positive(candidates, spec))]
    raise InvalidInput(f"unknown setting {spec!r}; use dense[:DIM|:all], dense-int8[:DIM], dense-binary[:DIM], "
                       "maxsim, maxsim-fp16, maxsim-pool:F, maxsim-binary[:N], two-stage[:DIM[:N]] or all")


def _args(spec: str, args: list[str], most: int, defaults: list[int | None]) -> list[int | None]:
    if len(args) > most:
        raise InvalidInput(f"setting {spec!r}: too many ':' arguments")
    values: list[int | None] = list(defaults)
    for position, text in enumerate(args):
        try:
            values[position] = int(text)
        except ValueError:
            raise InvalidInput(f"setting {spec!r}: {text!r} is not an integer") from None
    return values


def _positive(value: int | None, spec: str) -> int:
    if value is None or value < 1:
        raise InvalidInput(f"setting {spec!r}: the candidate count must be at least 1")
    return value


def _dimensions(value: int | None, info: ModelInfo, spec: str) -> int:
    if value is None or not 1 <= value <= info.dim:
        raise InvalidInput(f"setting {spec!r}: dimensions must be between 1 and {info.dim}")
    return value


def _matryoshka(info: ModelInfo) -> list[int]:
    return sorted(set(info.matryoshka_dims) | {info.dim})
