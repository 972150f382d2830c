"""A synthetic late-interaction corpus for store-level tests and benchmarks (no model needed).

Documents are bags of *concepts*: each has a few concepts out of a shared vocabulary, and each of
its token vectors is one of them plus noise (unit length, like v4's multi-vectors). Its single
vector is a fixed random map of its mean token plus noise, so single vectors agree with
multi-vectors only roughly, as a model's two heads do. A query is drawn from one document: noisy
copies of some of its concepts. Exact MaxSim is the ground truth the other modes are measured
against; the numbers say how those modes approximate it on vectors shaped like this, not how well a
model retrieves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from uniembed.core.token_pooling import pool_tokens
from uniembed.core.vectors import to_float16
from uniembed.retrieval.store import Point, point_id

if TYPE_CHECKING:
    from uniembed.retrieval.retriever import Retriever


@dataclass(frozen=True)
class LateCorpus:
    """A late-interaction corpus with known queries: synthetic (:func:`synthetic_corpus`) or from a
    real encoder (benchmarks/realistic_corpus.py)."""

    multivectors: torch.Tensor  # (docs, tokens, dim) float16, unit rows
    dense: torch.Tensor  # (docs, dense_dim) float32, unit
    queries: Sequence[torch.Tensor]  # one (query tokens, dim) float32 per query, unit rows
    query_dense: torch.Tensor  # (queries, dense_dim) float32, unit
    targets: torch.Tensor  # (queries,) the document each query was drawn from

    @property
    def size(self) -> int:
        return int(self.multivectors.shape[0])

    def doc_id(self, position: int) -> str:
        return f"doc-{position}"

    def write_to(self, retriever: Retriever, pool_factor: int = 1, batch_rows: int = 16384) -> None:
        """Write every document through ``retriever``, its multi-vectors token-pooled by
        ``pool_factor``, about ``batch_rows`` token rows a write."""
        batch = max(1, batch_rows // self.multivectors.shape[1])
        lists = retriever.tokens is None  # a Qdrant server takes the rows as lists
        for start in range(0, self.size, batch):
            positions = range(start, min(self.size, start + batch))
            rows = [self._rows(position, pool_factor) for position in positions]
            points = [
                Point(
                    point_id(self.doc_id(position), None),
                    self.dense[position].tolist(),
                    multi.tolist() if lists else None,
                    {
                        "id": self.doc_id(position),
                        "kind": "text",
                        "metadata": {"shard": position % 4},
                    },
                )
                for position, multi in zip(positions, rows, strict=True)
            ]
            retriever.write([self.doc_id(p) for p in positions], points, rows)

    def _rows(self, position: int, pool_factor: int) -> torch.Tensor:
        rows = self.multivectors[position].float()
        if pool_factor > 1:
            rows = to_float16(pool_tokens(rows, pool_factor)).float()
        return rows


def synthetic_corpus(
    docs: int,
    tokens: int,
    *,
    queries: int = 50,
    query_tokens: int = 20,
    dim: int = 128,
    dense_dim: int = 128,
    concepts: int = 4096,
    concepts_per_doc: int = 8,
    noise: float = 1.0,
    query_noise: float = 1.0,
    seed: int = 0,
) -> LateCorpus:
    """A corpus of ``docs`` documents of ``tokens`` token vectors each (see the module
    docstring)."""
    generator = torch.Generator().manual_seed(seed)
    unit = torch.nn.functional.normalize
    vocabulary = unit(torch.randn(concepts, dim, generator=generator), dim=-1)  # (concepts, dim)
    projection = torch.linalg.qr(
        torch.randn(max(dim, dense_dim), max(dim, dense_dim), generator=generator)
    )[0]
    projection = projection[:dim, :dense_dim]  # (dim, dense_dim): a random isometry
    chosen = torch.randint(0, concepts, (docs, concepts_per_doc), generator=generator)  # (docs, c)
    multivectors = torch.empty(docs, tokens, dim, dtype=torch.float16)
    means = torch.empty(docs, dim)
    step = max(1, 65536 // tokens)
    for start in range(0, docs, step):
        stop = min(docs, start + step)
        picks = torch.randint(0, concepts_per_doc, (stop - start, tokens), generator=generator)
        concept_ids = torch.gather(chosen[start:stop], 1, picks)  # (m, tokens)
        rows = (
            vocabulary[concept_ids]
            + noise * torch.randn(stop - start, tokens, dim, generator=generator) / dim**0.5
        )
        rows = unit(rows, dim=-1)  # (m, tokens, dim)
        multivectors[start:stop] = rows.half()
        means[start:stop] = rows.mean(1)
    dense = unit(
        means @ projection
        + 0.3 * torch.randn(docs, dense_dim, generator=generator) / dense_dim**0.5,
        dim=-1,
    )
    targets = torch.randint(0, docs, (queries,), generator=generator)
    picks = torch.randint(0, concepts_per_doc // 2, (queries, query_tokens), generator=generator)
    query_concepts = torch.gather(chosen[targets], 1, picks)  # (queries, query_tokens)
    query_rows = (
        vocabulary[query_concepts]
        + query_noise * torch.randn(queries, query_tokens, dim, generator=generator) / dim**0.5
    )
    query_rows = unit(query_rows, dim=-1)
    query_dense = unit(query_rows.mean(1) @ projection, dim=-1)
    return LateCorpus(multivectors, dense, query_rows, query_dense, targets)
