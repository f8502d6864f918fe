# Copyright (c) mmdms contributors. All rights reserved.
"""State shared by the DMS mutables: one learnable ratio, the importance and the soft mask."""
import contextlib
import itertools
from typing import Iterator, List, Optional, Union

import torch
import torch.nn as nn
from torch import Tensor

from mmdms.ops import hard_mask, rank_normalize, soft_mask
from .importance import BaseImportance, build_importance


#: The open :func:`masks_unrecorded` contexts, innermost last (``None``: masks are recorded).
_UNRECORDED: List[Optional[int]] = [None]
_CONTEXTS = itertools.count()


@contextlib.contextmanager
def masks_unrecorded() -> Iterator[None]:
    """Soft masks read inside this context are computed apart from the forward's (one per
    mutable and context) and record nothing for the importance: a loss computed from them (the
    resource loss) still trains the ratios, but its ``dL/dm`` is not added into the Taylor
    importance, which then measures the task loss alone (Molchanov et al.'s importance).
    Outside it every reader shares the forward's one mask."""
    _UNRECORDED.append(next(_CONTEXTS))
    try:
        yield
    finally:
        _UNRECORDED.pop()


class DMSTopkMixin:
    """Differentiable top-k over ``num_elements`` elements (paper §3.1, App. A.1.1).

    Owns the learnable pruning ratio ``dms_ratio`` (``a``; kept count ``N - ceil(a N)``), the
    ``importance`` buffer and the temperature. ``a`` is projected onto ``[0, max_ratio]`` before
    each use (``max_ratio = 1 - min_elements / N``), so at least ``min_elements`` stay.

    The soft mask is computed once per forward pass and shared by every consumer: with gradients
    enabled one tensor hook receives ``dL/dm`` summed over all consumers, records ``(m * dL/dm)^2``
    for Taylor importance, and marks the mask consumed so the next forward computes a new one.

    Subclasses call :meth:`_init_topk` from ``__init__``.
    """

    dms_ratio: nn.Parameter
    importance: Tensor

    def _init_topk(self,
                   num_elements: int,
                   lambda_: Optional[float],
                   lambda_scale: float,
                   min_elements: int,
                   importance: Union[str, dict, BaseImportance, None],
                   normalize: bool) -> None:
        if num_elements < 1:
            raise ValueError(f'{type(self).__name__} needs at least 1 element, got {num_elements}')
        if not 0 <= min_elements <= num_elements:
            raise ValueError(f'{type(self).__name__}: the minimum kept ({min_elements}) must be in '
                             f'[0, {num_elements}] for {num_elements} elements')
        self.num_elements = num_elements
        self.min_elements = min_elements
        self.lambda_ = float(lambda_) if lambda_ is not None else float(lambda_scale * num_elements)
        if self.lambda_ <= 0:
            raise ValueError(f'{type(self).__name__}: lambda_ must be positive, got {self.lambda_}')
        self.normalize = normalize
        self.importance_metric = build_importance(importance)
        self.dms_ratio = nn.Parameter(torch.zeros(()))
        self.register_buffer('importance', self.importance_metric.initial(num_elements).float())
        self._mask_cache: Optional[Tensor] = None
        self._mask_cache_key: Optional[tuple] = None
        self._rank_cache: Optional[tuple] = None  # (importance, key, ranks)
        self._hard_cache: Optional[tuple] = None  # (importance, key, hard mask)
        self._grad_stat_sum: Optional[Tensor] = None
        self._grad_stat_count = 0

    # ratio -----------------------------------------------------------------------------------
    @property
    def max_ratio(self) -> float:
        """Largest pruning ratio allowed: ``1 - min_elements / N``."""
        return 1.0 - self.min_elements / self.num_elements

    def _projected_ratio(self) -> Tensor:
        # Functional clamp: a no-op while ``dms_ratio`` is in range (its gradient passes at the
        # bounds); :meth:`project_ratio` moves the stored value back after each optimiser step.
        return self.dms_ratio.clamp(0.0, self.max_ratio)

    @torch.no_grad()
    def project_ratio(self) -> None:
        """Project the stored ratio onto ``[0, max_ratio]`` (projected gradient descent)."""
        self.dms_ratio.clamp_(0.0, self.max_ratio)

    def set_kept(self, kept: int) -> None:
        """Set the ratio so that exactly ``kept`` elements survive the hard mask.

        ``a`` is put half-way between the ranks of the last kept and the first pruned element,
        ``a = (N - kept - 0.5) / N`` (0 when all are kept), so neither sits at ``m = 0.5``.
        """
        if not self.min_elements <= kept <= self.num_elements:
            raise ValueError(f'{type(self).__name__}: cannot keep {kept} of {self.num_elements} '
                             f'elements; the allowed range is [{self.min_elements}, '
                             f'{self.num_elements}]')
        with torch.no_grad():
            self.dms_ratio.fill_(max(self.num_elements - kept - 0.5, 0.0) / self.num_elements)

    # masks -----------------------------------------------------------------------------------
    def normalized_importance(self) -> Tensor:
        """``c'`` of Eq. 2 (or ``c`` itself with ``normalize=False``).

        The ranks are sorted once per importance value: cached until the importance buffer is
        changed (in place, which bumps its version, or replaced). Do not modify the result.
        """
        if not self.normalize:
            return self.importance
        importance = self.importance
        key = (importance.data_ptr(), importance._version)
        cached = getattr(self, '_rank_cache', None)
        if cached is not None and cached[0] is importance and cached[1] == key:
            return cached[2]
        ranks = rank_normalize(importance)
        self._rank_cache = (importance, key, ranks)
        return ranks

    def element_soft_mask(self) -> Tensor:
        """Soft mask over the elements, shape (N,), differentiable in ``dms_ratio``.

        Cached for the forward pass; recomputed after the ratio or importance changes, after a
        backward pass consumed it, or when the grad mode changes; inside
        :func:`masks_unrecorded`, computed afresh without the importance's gradient hook.
        """
        context = _UNRECORDED[-1]
        key = (torch.is_grad_enabled(), self.dms_ratio._version, self.importance._version)
        if context is not None:
            cached = getattr(self, '_unrecorded_cache', None)
            if cached is None or cached[0] != (context, key):
                mask = soft_mask(self.normalized_importance(), self._projected_ratio(),
                                 self.lambda_)
                cached = self._unrecorded_cache = ((context, key), mask)
            return cached[1]
        if self._mask_cache is not None and self._mask_cache_key == key:
            return self._mask_cache
        mask = soft_mask(self.normalized_importance(), self._projected_ratio(), self.lambda_)
        if mask.requires_grad and self.importance_metric.uses_mask_grad:
            mask.register_hook(self._make_mask_grad_hook(mask.detach()))
        self._mask_cache, self._mask_cache_key = mask, key
        return mask

    def _make_mask_grad_hook(self, mask_value: Tensor):

        def hook(grad: Tensor) -> None:
            stat = (mask_value * grad.detach()).pow(2)
            if self._grad_stat_sum is None:
                self._grad_stat_sum = stat
            else:
                self._grad_stat_sum = self._grad_stat_sum + stat
            self._grad_stat_count += 1
            self._mask_cache = None  # the graph behind this mask is consumed

        return hook

    def element_hard_mask(self) -> Tensor:
        """Hard 0/1 mask over the elements: kept iff ``m >= 0.5``.

        With Eq. 2's ranks the ratio's range keeps ``min_elements``. Without them
        (``normalize=False``, the Table 12 ablation) raw importance can lie entirely below the
        ratio: the ``min_elements`` most important elements are then kept anyway, so no width or
        stage is ever exported empty.

        Cached until the ratio or the importance changes (the resource estimator reads it for
        every layer of the group, every step). Do not modify the result.
        """
        ratio, importance = self.dms_ratio, self.importance
        key = (ratio.data_ptr(), ratio._version, importance.data_ptr(), importance._version)
        cached = getattr(self, '_hard_cache', None)
        if cached is not None and cached[0] is importance and cached[1] == key:
            return cached[2]
        mask = hard_mask(self.normalized_importance(), self._projected_ratio().detach())
        if not self.normalize and self.min_elements > 0 and mask.sum() < self.min_elements:
            order = torch.sort(self.importance, descending=True, stable=True).indices
            mask[order[:self.min_elements]] = 1.0
        self._hard_cache = (importance, key, mask)
        return mask

    @property
    def num_kept(self) -> int:
        """Number of elements the hard mask keeps."""
        return int(self.element_hard_mask().sum().item())

    def kept_elements(self) -> List[int]:
        """Indices of the kept elements, most important first (ties: lower index first)."""
        keep = self.element_hard_mask().bool()
        order = torch.sort(self.importance, descending=True, stable=True).indices
        return [int(i) for i in order if keep[i]]

    # importance ------------------------------------------------------------------------------
    def pop_mask_grad_statistic(self) -> Optional[Tensor]:
        """Mean of ``(m * dL/dm)^2`` over this iteration's backward passes; resets it."""
        if self._grad_stat_sum is None:
            return None
        stat = self._grad_stat_sum / self._grad_stat_count
        self._grad_stat_sum, self._grad_stat_count = None, 0
        return stat

    def importance_statistic(self) -> Optional[Tensor]:
        """This rank's importance statistic for the iteration (see :mod:`.importance`)."""
        return self.importance_metric.statistic(self)

    @torch.no_grad()
    def apply_importance_statistic(self, statistic: Tensor) -> None:
        """Fold a (rank-averaged) statistic into the importance buffer."""
        if statistic.shape != self.importance.shape:
            raise ValueError(f'importance statistic of shape {tuple(statistic.shape)} does not '
                             f'match the importance {tuple(self.importance.shape)}')
        self.importance_metric.update(self.importance, statistic)

    def update_importance(self) -> bool:
        """Once per iteration, one process: update the importance and project the ratio.

        Returns True if the importance changed. Under data parallelism use
        :func:`mmdms.models.utils.sync_importance` instead, which averages the statistics of all
        ranks with one collective.
        """
        stat = self.importance_statistic()
        if stat is not None:
            self.apply_importance_statistic(stat)
        self.project_ratio()
        return stat is not None

    def _topk_extra_repr(self) -> str:
        return (f'num_elements={self.num_elements}, kept={self.num_kept}, '
                f'ratio={float(self.dms_ratio):.4f}, lambda_={self.lambda_:g}, '
                f'min_elements={self.min_elements}, normalize={self.normalize}, '
                f'importance={type(self.importance_metric).__name__}')
