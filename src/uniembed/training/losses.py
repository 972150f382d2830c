"""The published training losses of jina-embeddings-v3/v4, each a small ``nn.Module``.

Every loss takes the two sides of a batch as the model embedded them
(:class:`~uniembed.models.base.GradOutput`: raw pooled vectors, and for v4 multi-vectors) and, for
graded pairs, the gold scores:

* contrastive losses (:class:`InfoNCELoss`, :class:`JointLoss`): ``query`` holds n queries and
  ``documents`` n groups of g = 1 + hard-negatives rows, query i's group first its positive then
  its negatives: rows ``[i·g, (i+1)·g)``;
* :class:`CoSENTLoss`: ``query`` and ``documents`` hold the n first and second texts of the pairs.

Pooled vectors are L2-normalised here, so a loss of vectors cut to their first d dimensions is the
loss of the Matryoshka embedding of size d (:class:`MatryoshkaLoss`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn
from torch.nn import functional as F

from uniembed.core.scores import cosine_scores, maxsim_scores
from uniembed.models.base import GradOutput


def info_nce(
    scores: torch.Tensor, group: int, temperature: float, bidirectional: bool = False
) -> torch.Tensor:
    """Mean over queries of ``-log softmax(scores_i / τ)[i·group]`` (the positive of query i is the
    first of its group; every other column is a negative). ``bidirectional`` adds the
    document→query direction over the positives: ``-log softmax(scores[:, i·group] / τ)[i]``."""
    n = scores.shape[0]
    positives = torch.arange(n, device=scores.device) * group
    loss = F.cross_entropy(scores / temperature, positives)
    if bidirectional:
        loss = loss + F.cross_entropy(
            scores[:, positives].T / temperature, torch.arange(n, device=scores.device)
        )
    return loss


def late_scores(query: GradOutput, documents: GradOutput) -> torch.Tensor:
    """Late-interaction scores for training: MaxSim sum divided by the query's token count (n,
    k)."""
    if query.multivectors is None or documents.multivectors is None:
        raise ValueError("late-interaction scores need multi-vectors on both sides (a v4 model)")
    total = maxsim_scores(query.multivectors, documents.multivectors, query.mask, documents.mask)
    return total / query.mask.sum(dim=1, keepdim=True)


def group_size(query: GradOutput, documents: GradOutput) -> int:
    n, k = query.pooled.shape[0], documents.pooled.shape[0]
    if n == 0 or k % n:
        raise ValueError(f"{k} documents do not split into equal groups for {n} queries")
    return k // n


class InfoNCELoss(nn.Module):
    """InfoNCE with in-batch and hard negatives (the extended InfoNCE of the v3/v4 reports).

    ``s_ij = cos(q_i, d_j)`` over every document j of the batch (all positives and all hard
    negatives), ``L = -1/n Σ_i log( exp(s_i,pos(i) / τ) / Σ_j exp(s_ij / τ) )``; ``bidirectional``
    adds ``-1/n Σ_i log( exp(s_i,pos(i) / τ) / Σ_l exp(s_l,pos(i) / τ) )`` (v3's pair stage).
    """

    def __init__(self, temperature: float = 0.05, bidirectional: bool = False) -> None:
        super().__init__()
        self.temperature = temperature
        self.bidirectional = bidirectional

    def forward(
        self, query: GradOutput, documents: GradOutput, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        scores = cosine_scores(query.pooled, documents.pooled)  # (n, n·g)
        return info_nce(scores, group_size(query, documents), self.temperature, self.bidirectional)


class JointLoss(nn.Module):
    """v4's joint single- and multi-vector loss (training only; weights are not published).

    ``L = w1·dense(q, d) + w2·NCE(late / τ) + w3·KL(softmax(cos / τ) ‖ softmax(late / τ))`` where
    ``dense`` is an :class:`InfoNCELoss` (or a :class:`MatryoshkaLoss` of one) on the pooled
    vectors, ``late_ij = MaxSim(q_i, d_j) / |q_i|`` (MaxSim sum over the query's tokens, divided by
    their number), NCE is :func:`info_nce` and the KL divergence is ``1/n Σ_i Σ_j p_ij (log p_ij −
    log r_ij)`` between the row-softmaxed dense (p) and late (r) score matrices, both sides trained.
    """

    def __init__(
        self,
        dense: nn.Module,
        temperature: float = 0.05,
        weights: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        super().__init__()
        self.dense = dense
        self.temperature = temperature
        self.weights = tuple(float(w) for w in weights)

    def forward(
        self, query: GradOutput, documents: GradOutput, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        w_dense, w_late, w_kl = self.weights
        late = late_scores(query, documents)  # (n, n·g)
        dense = cosine_scores(query.pooled, documents.pooled)  # (n, n·g)
        nce_late = info_nce(late, group_size(query, documents), self.temperature)
        kl = F.kl_div(
            F.log_softmax(late / self.temperature, dim=1),
            F.log_softmax(dense / self.temperature, dim=1),
            log_target=True,
            reduction="batchmean",
        )
        return w_dense * self.dense(query, documents) + w_late * nce_late + w_kl * kl


class CoSENTLoss(nn.Module):
    """CoSENT for graded pairs (v3/v4 text-matching): with ``c_i = cos(a_i, b_i)`` and gold scores
    ``y``, ``L = log(1 + Σ_{(i,j): y_i > y_j} exp((c_j − c_i) / τ))`` — every pair ranked above
    another by the gold scores should have the higher cosine."""

    def __init__(self, temperature: float = 0.05) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(
        self, query: GradOutput, documents: GradOutput, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        if labels is None:
            raise ValueError("CoSENT needs the gold scores of the pairs")
        cosines = F.cosine_similarity(query.pooled, documents.pooled, dim=-1)  # (n,)
        differences = (
            cosines[None, :] - cosines[:, None]
        ) / self.temperature  # [i, j] = (c_j − c_i) / τ
        ordered = labels[:, None] > labels[None, :]  # [i, j]: pair i should score above pair j
        terms = differences[ordered]
        return torch.logsumexp(torch.cat([terms.new_zeros(1), terms]), dim=0)


class MatryoshkaLoss(nn.Module):
    """``L = Σ_d w_d · inner(q[:, :d], docs[:, :d])`` over the trained Matryoshka sizes d (weights 1
    unless given, as in sentence-transformers): the pooled vectors are cut before ``inner``
    normalises them, so every prefix is trained as an embedding. Multi-vectors are not cut."""

    def __init__(
        self, inner: nn.Module, dims: Sequence[int], weights: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        if not dims:
            raise ValueError("Matryoshka needs at least one size")
        if weights is not None and len(weights) != len(dims):
            raise ValueError(f"{len(weights)} Matryoshka weights for {len(dims)} sizes")
        self.inner = inner
        self.dims = tuple(int(d) for d in dims)
        self.weights = (
            tuple(float(w) for w in weights) if weights is not None else (1.0,) * len(self.dims)
        )

    def forward(
        self, query: GradOutput, documents: GradOutput, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        total = query.pooled.new_zeros(())
        for dim, weight in zip(self.dims, self.weights):
            cut_query = replace(query, pooled=query.pooled[:, :dim])
            cut_documents = replace(documents, pooled=documents.pooled[:, :dim])
            total = total + weight * self.inner(cut_query, cut_documents, labels)
        return total
