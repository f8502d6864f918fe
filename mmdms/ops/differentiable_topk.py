# Copyright (c) mmdms contributors. All rights reserved.
"""The differentiable top-k of DMS (paper §3.1, Eq. 2-3), as pure functions on tensors."""
import torch
from torch import Tensor


def rank_normalize(importance: Tensor) -> Tensor:
    """Map importance to evenly spread ranks in ``[0, 1)`` (paper Eq. 2).

    ``c'_i = (1/N) * #{j : c_i > c_j}`` for distinct values, computed by one stable sort:
    O(N log N) time, O(N) memory, no N x N comparison.

    Ties (importance starts at all zeros) are broken by position: among equal values the element
    with the lower index ranks higher. The result is therefore always a permutation of
    ``{0, 1/N, ..., (N-1)/N}``: finite, evenly spread, and a hard mask keeps a well-defined
    prefix of the tied elements (the first ones) instead of all or none of them.

    Args:
        importance (Tensor): shape (N,), any real values (NaN not allowed).

    Returns:
        Tensor: shape (N,), same dtype and device, no gradient.
    """
    if importance.dim() != 1:
        raise ValueError(f'importance must be 1-D, got shape {tuple(importance.shape)}')
    n = importance.numel()
    # Descending stable sort: most important first, ties in index order.
    order = torch.sort(importance.detach(), descending=True, stable=True).indices
    dtype = importance.dtype if importance.is_floating_point() else torch.float32
    ranks = torch.empty(n, dtype=dtype, device=importance.device)
    ranks[order] = torch.arange(n - 1, -1, -1, dtype=ranks.dtype, device=ranks.device)
    return ranks / n


def rank_normalize_quadratic(importance: Tensor) -> Tensor:
    """Eq. 2 written literally with an N x N comparison: the reference for tests and benchmarks."""
    c = importance.detach()
    dtype = c.dtype if c.is_floating_point() else torch.float32
    return (c[:, None] > c[None, :]).sum(dim=1).to(dtype) / c.numel()


def soft_mask(normalized: Tensor, ratio: Tensor, lambda_: float) -> Tensor:
    """Eq. 3: ``m = sigmoid(lambda_ * (c' - a))``; ``dm/da = -lambda_ * m * (1 - m)``."""
    return torch.sigmoid(lambda_ * (normalized - ratio))


def hard_mask(normalized: Tensor, ratio: Tensor) -> Tensor:
    """The hard mask of Eq. 3: an element is kept iff ``m >= 0.5``, i.e. iff ``c' >= a``.

    Written as ``c' >= a`` rather than ``sigmoid(...) >= 0.5`` because near the threshold the
    float sigmoid rounds to exactly 0.5. With ranks ``r/N`` the kept count is
    ``N - ceil(a * N)``: ``N`` at ``a = 0``, non-increasing in ``a``, within 1 of ``(1 - a) * N``.
    """
    return (normalized >= ratio.detach()).to(normalized.dtype)


def differentiable_topk(importance: Tensor,
                        ratio: Tensor,
                        lambda_: float,
                        normalize: bool = True) -> Tensor:
    """DMS's differentiable top-k: a soft mask selecting the top ``(1 - a)`` fraction.

    Args:
        importance (Tensor): element importance ``c``, shape (N,). Not differentiated.
        ratio (Tensor): the learnable pruning ratio ``a`` (scalar tensor, may require grad).
        lambda_ (float): temperature; ``N`` for widths, ``4N`` for depths and heads.
        normalize (bool): apply Eq. 2. ``False`` uses ``c' = c`` (the paper's Table 12 ablation).

    Returns:
        Tensor: soft mask in (0, 1), shape (N,), differentiable in ``ratio``.
    """
    normalized = rank_normalize(importance) if normalize else importance.detach()
    return soft_mask(normalized, ratio, lambda_)
