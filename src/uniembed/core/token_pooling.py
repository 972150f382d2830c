"""Token pooling: fewer rows per multi-vector, and a row cap.

* :func:`pool_tokens` — hierarchical token pooling as sentence-transformers 6
  ``HierarchicalTokenPooling`` / PyLate (> 1.3.4) do it: the first ``protected`` tokens stay as they
  are; the others are clustered by Ward linkage on their cosine distances (scipy) into
  ``tokens // pool_factor`` clusters and each cluster becomes its mean — renormalised to unit length
  here (as colpali-engine does; sentence-transformers keeps the raw mean), so pooled rows score on
  the same scale as unpooled ones. :func:`cluster_tokens` returns the cluster of every token, which
  is also what a similarity map needs to draw a pooled page.
* :func:`pool_to_fit` — pages of any size fit a backend's limit: pool (further) until at most
  ``max_rows`` rows remain (Qdrant's limit: :func:`uniembed.retrieval.store.max_rows_for`).

Ward linkage needs the token pair distances (memory quadratic in tokens), so tokens beyond
:data:`CLUSTER_BLOCK` are clustered block by block (consecutive tokens: neighbouring patch rows of a
page), each block to its share of the clusters. Pages of the usual size (under 1,024 tokens) are
clustered whole, exactly as sentence-transformers does.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from uniembed._optional import require

CLUSTER_BLOCK = 1024  # most tokens clustered together (Ward needs their pair distances)


def cluster_tokens(
    multivector: torch.Tensor, pool_factor: int, *, protected: int = 1
) -> torch.Tensor:
    """The pooled row each token of ``multivector`` (tokens, d) falls into → (tokens,) int64.

    Rows ``0 … protected - 1`` are the protected tokens themselves; the clusters follow. With
    ``pool_factor`` 1 (or too few tokens to pool) every token is its own row.

    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0], [1.0, 0.1], [0.9, 0.2]])
    >>> cluster_tokens(torch.nn.functional.normalize(x, dim=-1), 2).tolist()
    [0, 1, 1, 2, 2]
    """
    if pool_factor < 1:
        raise ValueError(f"pool_factor must be >= 1, got {pool_factor}")
    if protected < 0:
        raise ValueError(f"protected must be >= 0, got {protected}")
    tokens = multivector.shape[0]
    labels = torch.arange(tokens)
    rest = tokens - min(protected, tokens)
    if max(rest // pool_factor, 1) >= rest:
        return labels
    next_row = tokens - rest
    for start in range(next_row, tokens, CLUSTER_BLOCK):
        block = multivector[start : start + CLUSTER_BLOCK]
        clusters = max(block.shape[0] // pool_factor, 1)
        if clusters < block.shape[0]:
            block_labels = _ward_clusters(block, clusters)
        else:  # a last block of one token
            block_labels = torch.arange(clusters)
        labels[start : start + block.shape[0]] = block_labels + next_row
        next_row += int(block_labels.max()) + 1
    return labels


def pool_by_labels(multivector: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Unit-length mean of the rows of each label 0 … max(labels) → (max(labels) + 1, d).

    >>> pool_by_labels(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]), torch.tensor([0, 1, 1]))
    tensor([[1., 0.],
            [0., 1.]])
    """
    rows = int(labels.max()) + 1
    sums = torch.zeros(rows, multivector.shape[1], dtype=torch.float32)
    sums.index_add_(0, labels, multivector.float())  # (rows, d)
    return torch.nn.functional.normalize(sums, dim=-1)


def pool_tokens(multivector: torch.Tensor, pool_factor: int, *, protected: int = 1) -> torch.Tensor:
    """Hierarchical token pooling: about ``tokens / pool_factor`` rows (see the module docstring).

    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    >>> pool_tokens(torch.nn.functional.normalize(x, dim=-1), 2).shape
    torch.Size([2, 2])
    """
    labels = cluster_tokens(multivector, pool_factor, protected=protected)
    return pool_by_labels(multivector, labels)


def pool_to_fit(
    multivector: torch.Tensor, pool_factor: int, max_rows: int, *, protected: int = 1
) -> torch.Tensor:
    """:func:`cluster_tokens` with ``pool_factor``, pooled further until at most ``max_rows`` rows
    remain → (tokens,) labels. Any number of tokens fits, as long as ``max_rows > protected``.

    >>> x = torch.nn.functional.normalize(torch.randn(100, 8), dim=-1)
    >>> int(pool_to_fit(x, 1, max_rows=10).max()) + 1
    10
    """
    if max_rows <= protected:
        raise ValueError(f"max_rows ({max_rows}) must exceed the {protected} protected rows")
    tokens = multivector.shape[0]
    factor = pool_factor
    while True:
        labels = cluster_tokens(multivector, factor, protected=protected)
        if int(labels.max()) + 1 <= max_rows:
            return labels
        needed = math.ceil((tokens - protected) / (max_rows - protected))
        factor = max(factor + 1, needed)


def _ward_clusters(block: torch.Tensor, clusters: int) -> torch.Tensor:
    """Ward linkage on cosine distances (as sentence-transformers), cut into at most ``clusters``
    clusters → dense labels 0 … k-1 of each row."""
    hierarchy = require("scipy.cluster.hierarchy", "search", "token pooling")
    distance = require("scipy.spatial.distance", "search", "token pooling")
    rows = block.detach().float()
    cosine = (rows @ rows.T).numpy()  # (t, t)
    distances = np.clip(1 - cosine, 0, 2)
    np.fill_diagonal(distances, 0)
    linkage = hierarchy.linkage(distance.squareform(distances, checks=False), method="ward")
    labels = hierarchy.fcluster(linkage, t=clusters, criterion="maxclust")
    return torch.unique(torch.from_numpy(labels.astype("int64")), return_inverse=True)[1]
