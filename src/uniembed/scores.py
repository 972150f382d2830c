"""Similarity scores between batches of embeddings, as differentiable torch functions.

Shared by training (losses backpropagate through them) and by anything that ranks vectors. Inputs
are plain tensors from any model; nothing here knows a model family.
"""

from __future__ import annotations

import torch

MAXSIM_CHUNK_ELEMENTS = (
    1 << 25
)  # bound on the (queries, docs, q_tokens, d_tokens) block held at once


def cosine_scores(queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every query (n, dim) with every document (k, dim) → (n, k).

    >>> cosine_scores(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 3.0]])).tolist()
    [[1.0, 0.0]]
    """
    queries = torch.nn.functional.normalize(queries, dim=-1)
    documents = torch.nn.functional.normalize(documents, dim=-1)
    return queries @ documents.T


def maxsim(
    queries: torch.Tensor,
    documents: torch.Tensor,
    query_mask: torch.Tensor | None = None,
    document_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Late-interaction (ColBERT) scores: for every query i and document j,
    ``Σ_t max_u q_i[t] · d_j[u]`` over the real tokens t of the query and u of the document.

    ``queries`` (n, q_tokens, dim) and ``documents`` (k, d_tokens, dim) are padded token vectors
    (normally L2-normalised); the masks (bool, True at real tokens) default to all tokens. Returns
    (n, k). Computed in blocks of queries, so memory stays bounded for large batches; gradients flow
    to the maximising document token of each query token.

    >>> q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])               # one query, two tokens
    >>> d = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.0, 0.0]]])
    >>> maxsim(q, d, document_mask=torch.tensor([[True, True], [True, False]])).tolist()
    [[1.5, 1.0]]
    """
    if query_mask is None:
        query_mask = torch.ones(queries.shape[:2], dtype=torch.bool, device=queries.device)
    if document_mask is None:
        document_mask = torch.ones(documents.shape[:2], dtype=torch.bool, device=documents.device)
    per_query = max(1, documents.shape[0] * queries.shape[1] * documents.shape[1])
    step = max(1, MAXSIM_CHUNK_ELEMENTS // per_query)
    blocks = []
    for start in range(0, queries.shape[0], step):
        q = queries[start : start + step]  # (b, q_tokens, dim)
        sim = torch.einsum("btd,kud->bktu", q, documents)  # (b, k, q_tokens, d_tokens)
        sim = sim.masked_fill(~document_mask[None, :, None, :], float("-inf"))
        best = sim.amax(dim=-1)  # (b, k, q_tokens)
        best = best.masked_fill(~query_mask[start : start + step, None, :], 0.0)
        blocks.append(best.sum(dim=-1))  # (b, k)
    return torch.cat(blocks)
