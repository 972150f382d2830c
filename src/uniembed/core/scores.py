"""Similarity scores: pure functions on tensors (no index, no model), the one home of MaxSim.

* :func:`cosine_scores` / :func:`maxsim_scores` — every query against every document (n, k),
  differentiable: what training's losses and evaluation's rankings use.

* :func:`maxsim` — late interaction, ``Σ_i max_j ⟨q_i, d_j⟩`` over the query's token vectors
  ``q_i`` and a document's token vectors ``d_j`` (colpali-engine's ``score_multi_vector``, PyLate's
  ``colbert_scores``), over padded documents with a mask; :func:`maxsim_ragged` over documents
  stored back to back. Both score in chunks of document rows, so memory stays bounded.
* :func:`cosine` / :func:`dot` — single vectors.
* :func:`hamming_maxsim` / :func:`hamming_maxsim_ragged` — MaxSim over sign bits packed by
  :func:`uniembed.core.vectors.binarize`: ``Σ_i max_j (dim − 2·hamming(q_i, d_j))``,
  which is the MaxSim of the ±1 sign vectors (the first stage of binary search).

Every function returns float32 scores whatever the stored dtype (float16, bfloat16, bits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

DEFAULT_CHUNK_ROWS = 2048  # document rows per block: 1 MiB of decoded 128-d rows, kept in L2 cache
Decode = Callable[
    [torch.Tensor, torch.Tensor], torch.Tensor
]  # stored rows (r, …) → float32 rows (r, d): written into out, or the rows themselves


def maxsim(
    query: torch.Tensor,
    docs: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> torch.Tensor:
    """Late-interaction scores of one query (q, d) against padded documents (n, t, d) → (n,).

    ``mask`` (n, t) marks real document tokens; padded tokens never win a max. Without a mask every
    row counts (colpali-engine pads with zeros instead, which scores a padded row as 0: the same
    result whenever each query token has a non-negative best match).

    >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> docs = torch.tensor([[[1.0, 0.0], [0.6, 0.8]], [[-1.0, 0.0], [9.0, 9.0]]])
    >>> [round(s, 4) for s in maxsim(q, docs).tolist()]
    [1.8, 18.0]
    >>> maxsim(q, docs, torch.tensor([[True, True], [True, False]])).tolist()[1]
    -1.0
    """
    _check_query(query, docs.shape[-1])
    if docs.dim() != 3:
        raise ValueError(f"docs must be (docs, tokens, dim), got shape {tuple(docs.shape)}")
    if mask is not None and mask.shape != docs.shape[:2]:
        raise ValueError(f"mask {tuple(mask.shape)} does not match docs {tuple(docs.shape[:2])}")
    return _padded_maxsim(query.float(), docs, mask, _to_float32, chunk_rows)


def maxsim_ragged(
    query: torch.Tensor,
    rows: torch.Tensor,
    lengths: torch.Tensor,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> torch.Tensor:
    """:func:`maxsim` of documents stored back to back: ``rows`` (sum(lengths), d), document ``i``
    being the next ``lengths[i]`` rows → (len(lengths),). No padding is stored or scored.

    >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> rows = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0]])
    >>> [round(s, 4) for s in maxsim_ragged(q, rows, torch.tensor([2, 1])).tolist()]
    [1.8, -1.0]
    """
    _check_query(query, rows.shape[-1])
    _check_ragged(rows, lengths)
    return _ragged_maxsim(query.float(), rows, lengths, _to_float32, chunk_rows)


def cosine(query: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of query vector(s) (…, d) with documents (n, d) → (…, n).

    >>> cosine(torch.tensor([3.0, 4.0]), torch.tensor([[1.0, 0.0], [0.0, 2.0]])).tolist()
    [0.6000000238418579, 0.800000011920929]
    """
    normalize = torch.nn.functional.normalize
    return dot(normalize(query.float(), dim=-1), normalize(docs.float(), dim=-1))


def dot(query: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
    """Dot products of query vector(s) (…, d) with documents (n, d) → (…, n).

    >>> dot(torch.tensor([3.0, 4.0]), torch.tensor([[1.0, 0.0], [0.0, 2.0]])).tolist()
    [3.0, 8.0]
    """
    return query.float() @ docs.float().T  # (…, n)


def unpack_signs(bits: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Packed sign bits (…, bytes) uint8 → ±1 float32 (…, dim); bit 1 = positive, MSB first.

    ``dim`` drops the padding bits of the last byte (default: all ``8 * bytes`` bits).

    >>> unpack_signs(torch.tensor([0b10100000], dtype=torch.uint8), dim=3).tolist()
    [1.0, -1.0, 1.0]
    """
    signs = _SIGN_TABLE[bits.long()]  # (…, bytes, 8)
    signs = signs.reshape(*bits.shape[:-1], bits.shape[-1] * 8)  # (…, 8 * bytes)
    return signs if dim is None else signs[..., :dim]


def hamming_maxsim(
    query_bits: torch.Tensor,
    doc_bits: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    dim: int | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> torch.Tensor:
    """MaxSim over packed sign bits: ``Σ_i max_j (dim − 2·hamming(q_i, d_j))`` for a query
    (q, bytes) against padded documents (n, t, bytes) → (n,) float32 (integer values).

    ``dim`` is the number of real bits per vector (default ``8 * bytes``). Equal to :func:`maxsim`
    of the ±1 sign vectors, which is how it is computed: unpacked chunk by chunk (a matrix product
    beats popcount loops on a CPU), so memory stays bounded.

    >>> q = torch.tensor([[0b11110000]], dtype=torch.uint8)  # one query token of 8 bits
    >>> docs = torch.tensor([[[0b11110000], [0b00000000]],   # doc 0: an exact match → 8
    ...                      [[0b11111111], [0b00001111]]],  # doc 1: 4 bits off at best → 0
    ...                     dtype=torch.uint8)
    >>> hamming_maxsim(q, docs).tolist()
    [8.0, 0.0]
    """
    if doc_bits.dim() != 3:
        raise ValueError(f"doc_bits must be (docs, tokens, bytes), got {tuple(doc_bits.shape)}")
    _check_bits(query_bits, doc_bits)
    query = unpack_signs(query_bits, dim)
    return _padded_maxsim(query, doc_bits, mask, _sign_decoder(dim), chunk_rows)


def hamming_maxsim_ragged(
    query_bits: torch.Tensor,
    rows: torch.Tensor,
    lengths: torch.Tensor,
    *,
    dim: int | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> torch.Tensor:
    """:func:`hamming_maxsim` of documents whose packed rows are stored back to back (see
    :func:`maxsim_ragged`).

    >>> q = torch.tensor([[0b11110000]], dtype=torch.uint8)
    >>> rows = torch.tensor([[0b11110000], [0b11111111]], dtype=torch.uint8)
    >>> hamming_maxsim_ragged(q, rows, torch.tensor([1, 1])).tolist()
    [8.0, 0.0]
    """
    _check_bits(query_bits, rows)
    _check_ragged(rows, lengths)
    query = unpack_signs(query_bits, dim)
    return _ragged_maxsim(query, rows, lengths, _sign_decoder(dim), chunk_rows)


def pad_multivectors(multivectors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (tokens_i, d) matrices into zero-padded (n, max tokens, d) and a (n, max tokens) mask.

    >>> padded, mask = pad_multivectors([torch.ones(2, 3), torch.ones(1, 3)])
    >>> tuple(padded.shape), mask.tolist()
    ((2, 2, 3), [[True, True], [True, False]])
    """
    padded = torch.nn.utils.rnn.pad_sequence(multivectors, batch_first=True)  # (n, t, d)
    lengths = torch.tensor([m.shape[0] for m in multivectors])
    mask = torch.arange(padded.shape[1]) < lengths[:, None]  # (n, t)
    return padded, mask


# ----------------------------------------------------------------- all pairs (differentiable)
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


def maxsim_scores(
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
    >>> maxsim_scores(q, d, document_mask=torch.tensor([[True, True], [True, False]])).tolist()
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


# ----------------------------------------------------------------- the kernel
# Exact MaxSim, blocked for cache: a block of document rows is decoded to float32 into one
# preallocated buffer (none when they are float32 already), multiplied with the query into another
# as (query tokens, rows) — so each document's rows are contiguous along the last axis — and reduced
# right away to each document's max per query token: a view and ``amax`` when the block's documents
# have one length, numpy's ``maximum.reduceat`` over the row offsets otherwise. Before this layout
# the per-document max over (rows, query tokens) cost 1.5x the matrix product itself
# (BENCHMARKS.md, "Exact MaxSim kernel").
def _padded_maxsim(
    query: torch.Tensor,
    docs: torch.Tensor,
    mask: torch.Tensor | None,
    decode: Decode,
    chunk_rows: int,
) -> torch.Tensor:
    count, tokens = docs.shape[:2]
    scores = torch.empty(count, dtype=torch.float32)
    step = max(1, chunk_rows // max(tokens, 1))
    buffers = _Buffers(query, min(step, count) * tokens)
    for start in range(0, count, step):
        stop = min(count, start + step)
        rows = (stop - start) * tokens
        product = buffers.product(decode(docs[start:stop].reshape(rows, -1), buffers.block(rows)))
        product = product.view(-1, stop - start, tokens)  # (q, m, t)
        if mask is not None:
            product.masked_fill_(~mask[None, start:stop], float("-inf"))
        scores[start:stop] = product.amax(dim=-1).sum(dim=0)  # (m,)
    return scores


def _ragged_maxsim(
    query: torch.Tensor, rows: torch.Tensor, lengths: torch.Tensor, decode: Decode, chunk_rows: int
) -> torch.Tensor:
    scores = torch.empty(len(lengths), dtype=torch.float32)
    chunks = list(_row_chunks(lengths, chunk_rows))
    largest = max((row_stop - row_start for _, _, row_start, row_stop in chunks), default=0)
    buffers = _Buffers(query, largest)
    counts = lengths.numpy()
    for first, last, row_start, row_stop in chunks:
        size = row_stop - row_start
        product = buffers.product(decode(rows[row_start:row_stop], buffers.block(size)))
        torch.sum(_segment_max(product, counts[first:last]), dim=0, out=scores[first:last])
    return scores


class _Buffers:
    """The two preallocated buffers of the kernel: decoded rows and their product with the query
    (fresh tensors per block cost page faults: 2-4x slower scoring on the machine of
    BENCHMARKS.md)."""

    def __init__(self, query: torch.Tensor, rows: int) -> None:
        self.query = query.contiguous()  # (q, d) float32
        self._block = torch.empty(rows, query.shape[1])
        self._product = torch.empty(query.shape[0] * rows)

    def block(self, rows: int) -> torch.Tensor:
        return self._block[:rows]

    def product(self, block: torch.Tensor) -> torch.Tensor:
        """query · blockᵀ → (q, rows), into the product buffer."""
        out = self._product[: self.query.shape[0] * block.shape[0]].view(-1, block.shape[0])
        return torch.mm(self.query, block.T, out=out)


def _segment_max(product: torch.Tensor, lengths: np.ndarray) -> torch.Tensor:
    """Max over consecutive column segments of ``lengths`` columns: (q, rows) → (q, segments)."""
    if lengths.min() == lengths.max():
        return product.view(product.shape[0], len(lengths), -1).amax(dim=-1)
    offsets = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return torch.from_numpy(np.maximum.reduceat(product.numpy(), offsets, axis=1))


def _row_chunks(lengths: torch.Tensor, chunk_rows: int) -> Iterator[tuple[int, int, int, int]]:
    """Consecutive document ranges [first, last) of about ``chunk_rows`` rows (at most one document
    more), with their row range [row_start, row_stop); vectorised, so a long corpus costs no Python
    loop per document."""
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.long)
    torch.cumsum(lengths, 0, out=offsets[1:])
    targets = torch.arange(0, int(offsets[-1]), max(1, chunk_rows))
    starts = torch.unique(torch.searchsorted(offsets, targets, right=True) - 1).tolist()
    bounds = [*starts, len(lengths)]
    row_bounds = offsets[bounds].tolist()
    for k in range(len(starts)):
        yield bounds[k], bounds[k + 1], row_bounds[k], row_bounds[k + 1]


def _to_float32(rows: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    if rows.dtype == torch.float32:
        return rows  # nothing to decode: multiply the stored rows in place
    return out.copy_(rows)


def _sign_decoder(dim: int | None) -> Decode:
    def decode(bits: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if out.shape[1] == 8 * bits.shape[1]:  # whole bytes: look the signs up straight into out
            torch.index_select(_SIGN_TABLE, 0, bits.reshape(-1).long(), out=out.view(-1, 8))
        else:
            out.copy_(unpack_signs(bits, dim))
        return out

    return decode


_SIGN_TABLE = torch.tensor(
    [[1.0 if byte >> (7 - bit) & 1 else -1.0 for bit in range(8)] for byte in range(256)]
)  # (256, 8): the ±1 signs of each byte value, MSB first


def _check_query(query: torch.Tensor, dim: int) -> None:
    if query.dim() != 2 or query.shape[-1] != dim:
        raise ValueError(f"query must be (tokens, {dim}), got shape {tuple(query.shape)}")


def _check_ragged(rows: torch.Tensor, lengths: torch.Tensor) -> None:
    if lengths.dim() != 1 or (len(lengths) and int(lengths.min()) < 1):
        raise ValueError("lengths must be a 1-D tensor of positive row counts")
    if int(lengths.sum()) != rows.shape[0]:
        raise ValueError(f"lengths sum to {int(lengths.sum())} rows, but got {rows.shape[0]} rows")


def _check_bits(query_bits: torch.Tensor, doc_bits: torch.Tensor) -> None:
    if query_bits.dtype != torch.uint8 or doc_bits.dtype != torch.uint8:
        raise ValueError("packed sign bits must be uint8 (see compression.binarize)")
    _check_query(query_bits, doc_bits.shape[-1])
