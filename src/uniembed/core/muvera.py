"""MUVERA fixed-dimensional encodings: one vector per multi-vector whose dot product approximates
MaxSim (Dhulipala et al., "MUVERA: Multi-Vector Retrieval via Fixed Dimensional Encodings", 2024).

For each of ``repetitions`` independent draws: ``simhash_bits`` Gaussian hyperplanes split the space
into ``2 ** simhash_bits`` buckets (a vector's bucket is the signs of its dot products with them, as
bits); each bucket's vectors are combined — a **query** sums them, a **document** averages them,
and a document bucket left empty takes the document vector whose code is nearest in Hamming
distance (the paper's ``fill_empty_partitions``) — and each bucket's result is projected to
``projection_dim`` by a random ±1 matrix scaled by ``1 / sqrt(projection_dim)`` (the paper's inner
projection ψ). The buckets of every repetition are concatenated: ``repetitions · 2 ** simhash_bits ·
projection_dim`` values. ``<fde(query), fde(doc)>`` then estimates ``Σ_i max_j <q_i, d_j>``: a query
vector meets the average of the document vectors that fall in its bucket, which are near it.

The encodings give a first stage built from the multi-vectors themselves (an ordinary dense search
over them), which exact MaxSim then reranks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class Muvera:
    """One draw of the random hyperplanes and projections, from ``seed``: queries and documents
    must be encoded by the same one (same arguments)."""

    def __init__(
        self,
        dim: int,
        *,
        simhash_bits: int = 4,
        projection_dim: int = 16,
        repetitions: int = 10,
        seed: int = 0,
    ) -> None:
        self.dim, self.simhash_bits = dim, simhash_bits
        self.projection_dim, self.repetitions = projection_dim, repetitions
        generator = torch.Generator().manual_seed(seed)
        self.planes = torch.randn(repetitions, dim, simhash_bits, generator=generator)
        signs = torch.randint(0, 2, (repetitions, dim, projection_dim), generator=generator)
        self.projections = (2 * signs - 1).float() / projection_dim**0.5

    @property
    def buckets(self) -> int:
        return 2**self.simhash_bits

    @property
    def output_dim(self) -> int:
        """Values of one encoding.

        >>> Muvera(128).output_dim
        2560
        """
        return self.repetitions * self.buckets * self.projection_dim

    def query(self, vectors: torch.Tensor) -> torch.Tensor:
        """The encoding of a query's (tokens, dim) vectors: per bucket, their sum."""
        return self._encode(vectors, average=False)

    def document(self, vectors: torch.Tensor) -> torch.Tensor:
        """The encoding of a document's (tokens, dim) vectors: per bucket, their mean (empty
        buckets: the vector nearest to the bucket by code)."""
        return self._encode(vectors, average=True)

    def documents(self, multivectors: Sequence[torch.Tensor]) -> torch.Tensor:
        """(n, output_dim): :meth:`document` of each of ``multivectors``, computed for the whole
        batch at once (one product per repetition over every token, sums by bucket of each
        document); only documents with an empty bucket are filled one by one."""
        if not multivectors:
            return torch.zeros(0, self.output_dim)
        lengths = torch.tensor([len(m) for m in multivectors])
        vectors = torch.cat([m.float() for m in multivectors])
        owner = torch.repeat_interleave(torch.arange(len(multivectors)), lengths)
        weights = 1 << torch.arange(self.simhash_bits)
        slots = len(multivectors) * self.buckets
        parts = []
        for planes, projection in zip(self.planes, self.projections, strict=True):
            bits = (vectors @ planes > 0).long()  # (all tokens, simhash_bits)
            slot = owner * self.buckets + bits @ weights  # (all tokens,): document × bucket
            sums = torch.zeros(slots, self.dim).index_add_(0, slot, vectors)
            counts = torch.bincount(slot, minlength=slots)
            means = (sums / counts.clamp(min=1)[:, None]).view(-1, self.buckets, self.dim)
            starts = torch.cumsum(lengths, 0) - lengths
            for doc in (counts.view(-1, self.buckets) == 0).any(1).nonzero().flatten().tolist():
                rows = slice(int(starts[doc]), int(starts[doc] + lengths[doc]))
                means[doc] = self._filled(
                    sums.view(-1, self.buckets, self.dim)[doc],
                    counts.view(-1, self.buckets)[doc],
                    bits[rows],
                    vectors[rows],
                )
            parts.append((means @ projection).flatten(1))  # (n, buckets · projection_dim)
        return torch.cat(parts, dim=1)

    def _encode(self, vectors: torch.Tensor, *, average: bool) -> torch.Tensor:
        vectors = vectors.float()
        weights = 1 << torch.arange(self.simhash_bits)  # bit i of a bucket id: hyperplane i
        parts = []
        for planes, projection in zip(self.planes, self.projections, strict=True):
            bits = (vectors @ planes > 0).long()  # (tokens, simhash_bits)
            codes = bits @ weights  # (tokens,)
            sums = torch.zeros(self.buckets, self.dim).index_add_(0, codes, vectors)
            if average:
                counts = torch.bincount(codes, minlength=self.buckets)
                sums = self._filled(sums, counts, bits, vectors)
            parts.append((sums @ projection).flatten())  # (buckets · projection_dim,)
        return torch.cat(parts)

    def _filled(
        self, sums: torch.Tensor, counts: torch.Tensor, bits: torch.Tensor, vectors: torch.Tensor
    ) -> torch.Tensor:
        """Bucket means; an empty bucket takes the vector whose code is nearest to its id."""
        means = sums / counts.clamp(min=1)[:, None]
        empty = (counts == 0).nonzero().flatten()
        if len(empty) and len(vectors):
            bucket_bits = (empty[:, None] >> torch.arange(self.simhash_bits)) & 1  # (empty, bits)
            distance = (bucket_bits[:, None, :] != bits[None, :, :]).sum(-1)  # (empty, tokens)
            means[empty] = vectors[distance.argmin(dim=1)]
        return means
