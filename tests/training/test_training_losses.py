"""Each loss against a direct computation (plain Python loops over small tensors)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from uniembed.core.scores import maxsim_scores
from uniembed.models.base import GradOutput
from uniembed.training.losses import CoSENTLoss, InfoNCELoss, JointLoss, MatryoshkaLoss


def side(
    seed: int, rows: int, dim: int = 6, tokens: int = 0, lengths: list[int] | None = None
) -> GradOutput:
    generator = torch.Generator().manual_seed(seed)
    pooled = torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    if not tokens:
        return GradOutput(pooled, None, torch.ones(rows, 1, dtype=torch.bool))
    lengths = lengths or [tokens] * rows
    mask = torch.tensor([[t < n for t in range(tokens)] for n in lengths])
    multi = torch.nn.functional.normalize(
        torch.randn(rows, tokens, 4, generator=generator, dtype=torch.float64), dim=-1
    )
    return GradOutput(pooled, multi * mask[..., None], mask)


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def direct_info_nce(
    q: torch.Tensor, d: torch.Tensor, tau: float, bidirectional: bool = False
) -> float:
    n, group = q.shape[0], d.shape[0] // q.shape[0]
    total = 0.0
    for i in range(n):
        logits = [cos(q[i], d[j]) / tau for j in range(d.shape[0])]
        total -= logits[i * group] - math.log(sum(math.exp(x) for x in logits))
        if bidirectional:
            back = [cos(q[m], d[i * group]) / tau for m in range(n)]
            total -= back[i] - math.log(sum(math.exp(x) for x in back))
    return total / n


def direct_late(q: GradOutput, d: GradOutput) -> list[list[float]]:
    scores = []
    for i in range(q.pooled.shape[0]):
        q_tokens = [q.multivectors[i, t] for t in range(q.mask.shape[1]) if q.mask[i, t]]
        row = []
        for j in range(d.pooled.shape[0]):
            d_tokens = [d.multivectors[j, u] for u in range(d.mask.shape[1]) if d.mask[j, u]]
            row.append(sum(max(float(a @ b) for b in d_tokens) for a in q_tokens) / len(q_tokens))
        scores.append(row)
    return scores


@pytest.mark.parametrize("negatives", [0, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_info_nce_equals_the_direct_sum(negatives: int, bidirectional: bool) -> None:
    q, d = side(0, 3), side(1, 3 * (1 + negatives))
    loss = InfoNCELoss(temperature=0.05, bidirectional=bidirectional)(q, d)
    assert float(loss) == pytest.approx(
        direct_info_nce(q.pooled, d.pooled, 0.05, bidirectional), rel=1e-9
    )


def test_maxsim_equals_the_direct_double_loop() -> None:
    q, d = side(2, 2, tokens=3, lengths=[3, 1]), side(3, 4, tokens=5, lengths=[5, 2, 1, 4])
    got = maxsim_scores(q.multivectors, d.multivectors, q.mask, d.mask) / q.mask.sum(
        1, keepdim=True
    )
    torch.testing.assert_close(got, torch.tensor(direct_late(q, d), dtype=torch.float64))


def test_maxsim_in_blocks_equals_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    q, d = side(4, 5, tokens=3, lengths=[3, 1, 2, 3, 2]), side(5, 4, tokens=4, lengths=[4, 2, 1, 3])
    whole = maxsim_scores(q.multivectors, d.multivectors, q.mask, d.mask)
    monkeypatch.setattr("uniembed.core.scores.MAXSIM_CHUNK_ELEMENTS", 1)  # one query per block
    torch.testing.assert_close(maxsim_scores(q.multivectors, d.multivectors, q.mask, d.mask), whole)


def test_joint_loss_equals_the_direct_formula() -> None:
    tau, weights = 0.05, (0.7, 0.2, 0.5)
    q, d = side(6, 3, tokens=4, lengths=[4, 2, 3]), side(7, 6, tokens=5, lengths=[5, 1, 3, 2, 4, 5])
    loss = JointLoss(InfoNCELoss(tau), tau, weights)(q, d)
    late = direct_late(q, d)
    dense = [[cos(q.pooled[i], d.pooled[j]) for j in range(6)] for i in range(3)]
    nce_late = 0.0
    kl = 0.0
    for i in range(3):
        z_late = sum(math.exp(x / tau) for x in late[i])
        z_dense = sum(math.exp(x / tau) for x in dense[i])
        nce_late -= late[i][2 * i] / tau - math.log(z_late)
        for j in range(6):
            p, r = math.exp(dense[i][j] / tau) / z_dense, math.exp(late[i][j] / tau) / z_late
            kl += p * (math.log(p) - math.log(r))
    want = (
        weights[0] * direct_info_nce(q.pooled, d.pooled, tau)
        + weights[1] * nce_late / 3
        + weights[2] * kl / 3
    )
    assert float(loss) == pytest.approx(want, rel=1e-9)


def test_cosent_equals_the_direct_sum() -> None:
    a, b = side(8, 5), side(9, 5)
    labels = torch.tensor([0.1, 0.9, 0.5, 0.5, 0.0], dtype=torch.float64)
    tau = 0.05
    c = [cos(a.pooled[i], b.pooled[i]) for i in range(5)]
    inner = sum(
        math.exp((c[j] - c[i]) / tau) for i in range(5) for j in range(5) if labels[i] > labels[j]
    )
    assert float(CoSENTLoss(tau)(a, b, labels)) == pytest.approx(math.log(1 + inner), rel=1e-9)


def test_cosent_is_zero_when_no_pair_outranks_another() -> None:
    a, b = side(10, 3), side(11, 3)
    assert float(CoSENTLoss()(a, b, torch.ones(3, dtype=torch.float64))) == pytest.approx(0.0)


def test_matryoshka_is_the_weighted_sum_over_cut_vectors() -> None:
    q, d = side(12, 3, dim=8), side(13, 3, dim=8)
    loss = MatryoshkaLoss(InfoNCELoss(0.05), dims=(2, 4, 8), weights=(1.0, 0.5, 2.0))(q, d)
    want = sum(
        w * direct_info_nce(q.pooled[:, :k], d.pooled[:, :k], 0.05)
        for k, w in ((2, 1.0), (4, 0.5), (8, 2.0))
    )
    assert float(loss) == pytest.approx(want, rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(0, 3), st.floats(0.01, 1.0), st.integers(0, 10_000))
def test_info_nce_matches_the_direct_sum_on_random_batches(
    n: int, negatives: int, tau: float, seed: int
) -> None:
    q, d = side(seed, n), side(seed + 1, n * (1 + negatives))
    assert float(InfoNCELoss(tau)(q, d)) == pytest.approx(
        direct_info_nce(q.pooled, d.pooled, tau), rel=1e-7
    )


def test_info_nce_refuses_uneven_groups() -> None:
    with pytest.raises(ValueError, match="equal groups"):
        InfoNCELoss()(side(0, 2), side(1, 3))
