# Copyright (c) mmdms contributors. All rights reserved.
"""Properties of the differentiable top-k (paper Eq. 2-3)."""
import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdms.ops import (differentiable_topk, hard_mask, rank_normalize, rank_normalize_quadratic,
                       soft_mask)

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)
distinct_values = st.lists(finite, min_size=1, max_size=300, unique=True)
any_values = st.lists(st.sampled_from([0.0, 1.0, 2.5, -3.0]) | finite, min_size=1, max_size=300)
ratios = st.floats(0.0, 1.0, allow_nan=False)


@given(distinct_values)
def test_rank_normalize_equals_eq2_on_distinct_values(values):
    c = torch.tensor(values, dtype=torch.float32)
    assert torch.equal(rank_normalize(c), rank_normalize_quadratic(c))


@given(any_values)
def test_rank_normalize_is_an_even_spread_with_ties_broken_by_index(values):
    c = torch.tensor(values, dtype=torch.float32)
    n = c.numel()
    ranks = rank_normalize(c)
    assert torch.isfinite(ranks).all()
    assert sorted((ranks * n).round().long().tolist()) == list(range(n))
    # consistent with the values: strictly larger importance -> strictly larger rank,
    # equal importance -> the lower index ranks higher
    for i in range(min(n, 40)):
        for j in range(min(n, 40)):
            if c[i] > c[j] or (c[i] == c[j] and i < j):
                assert ranks[i] > ranks[j]


def test_all_zero_importance_keeps_the_first_elements():
    ranks = rank_normalize(torch.zeros(8))
    kept = hard_mask(ranks, torch.tensor(0.5))
    assert kept.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    m = soft_mask(ranks, torch.tensor(0.5), 8.0)
    assert torch.isfinite(m).all() and m[0] > m[-1]


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    return math.exp(x) / (1.0 + math.exp(x))


@given(distinct_values, ratios, st.floats(0.5, 5000))
def test_soft_mask_values_follow_eq3(values, a, lam):
    c = torch.tensor(values, dtype=torch.float64)
    ratio = torch.tensor(a, dtype=torch.float64)
    m = differentiable_topk(c, ratio, lam)
    c_norm = rank_normalize_quadratic(c).double()
    expected = torch.tensor([_sigmoid(lam * (ci - a)) for ci in c_norm.tolist()],
                            dtype=torch.float64)
    assert torch.allclose(m, expected, rtol=1e-9, atol=1e-12)


@given(distinct_values, ratios, st.floats(0.5, 500))
def test_gradient_wrt_ratio_is_closed_form(values, a, lam):
    c = torch.tensor(values, dtype=torch.float64)
    n = c.numel()
    for i in range(min(n, 5)):
        ratio = torch.tensor(a, dtype=torch.float64, requires_grad=True)
        m = differentiable_topk(c, ratio, lam)
        (grad, ) = torch.autograd.grad(m[i], ratio)
        expected = -lam * m[i] * (1 - m[i])
        assert torch.allclose(grad, expected.detach(), rtol=1e-9, atol=1e-15)


@given(st.integers(1, 2000), st.lists(ratios, min_size=2, max_size=8), st.integers(0, 2**31 - 1))
def test_kept_count_monotonic_and_within_one(n, a_values, seed):
    c = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    ranks = rank_normalize(c)
    counts = []
    for a in sorted(a_values):
        kept = int(hard_mask(ranks, torch.tensor(a, dtype=torch.float32)).sum())
        assert abs(kept - (1 - a) * n) <= 1 + 1e-6 * n
        counts.append(kept)
    assert counts == sorted(counts, reverse=True)
    assert int(hard_mask(ranks, torch.tensor(0.0)).sum()) == n


@given(st.integers(1, 500), ratios, st.integers(0, 2**31 - 1))
def test_hard_mask_is_soft_mask_at_least_half_and_keeps_the_most_important(n, a, seed):
    c = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ratio = torch.tensor(a, dtype=torch.float64)
    ranks = rank_normalize(c)
    hard = hard_mask(ranks, ratio).bool()
    soft = soft_mask(ranks, ratio, float(n))
    # away from rounding at exactly 0.5, m >= 0.5 and the hard mask agree
    assert torch.equal(hard[(soft - 0.5).abs() > 1e-12], (soft >= 0.5)[(soft - 0.5).abs() > 1e-12])
    if hard.any() and (~hard).any():
        assert c[hard].min() > c[~hard].max()


@settings(max_examples=30)
@given(st.integers(2, 64), ratios)
def test_lambda_n_polarises_all_but_six_elements(n, a):
    """Paper §3.1.2: with lambda = N only elements within 3/N of a are in (0.05, 0.95)."""
    ranks = rank_normalize(torch.randn(n, generator=torch.Generator().manual_seed(n)).double())
    m = soft_mask(ranks, torch.tensor(a, dtype=torch.float64), float(n))
    fuzzy = ((m > 0.0475) & (m < 0.9525)).sum()
    assert fuzzy <= 6
