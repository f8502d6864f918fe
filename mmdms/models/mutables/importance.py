# Copyright (c) mmdms contributors. All rights reserved.
"""Element importance metrics for the DMS top-k (paper Eq. 4 and the Table 8 ablation).

A metric is registered in mmrazor's ``TASK_UTILS`` and named in a mutable's config, e.g.
``importance=dict(type='TaylorImportance', decay=0.99)`` or the short names ``'taylor'``,
``'l1'``, ``'index'``. Importance is a buffer of the mutable; it is never trained by gradient
descent. A metric turns what one iteration observed on this rank into a *statistic*; the
statistics of all ranks are averaged (:func:`mmdms.models.utils.sync_importance`) before
:meth:`BaseImportance.update` folds them in, so every rank holds the same importance.
"""
from typing import Optional, Union

import torch
from mmrazor.registry import TASK_UTILS
from torch import Tensor


class BaseImportance:
    """Interface of an importance metric.

    Attributes:
        uses_mask_grad (bool): the metric needs ``dL/dm`` of the soft mask every iteration.
    """

    uses_mask_grad = False

    def initial(self, num_elements: int) -> Tensor:
        """Importance before any update."""
        return torch.zeros(num_elements)

    def statistic(self, mutable) -> Optional[Tensor]:
        """This rank's statistic for the current iteration, or None if there is nothing new."""
        return None

    def update(self, importance: Tensor, statistic: Tensor) -> None:
        """Fold the rank-averaged ``statistic`` into ``importance`` in place."""
        importance.copy_(statistic)


@TASK_UTILS.register_module()
class TaylorImportance(BaseImportance):
    """Taylor importance with a moving average (paper Eq. 4).

    ``c <- decay * c + (1 - decay) * (m * dL/dm)^2``, starting from 0. ``dL/dm`` is the gradient
    of the loss with respect to the element's soft mask, summed over every layer consuming it
    (one autograd hook on the one mask tensor of the iteration). With gradient accumulation the
    squared terms of the backward passes of one iteration are averaged.

    Args:
        decay (float): moving-average decay. Defaults to 0.99.
    """

    uses_mask_grad = True

    def __init__(self, decay: float = 0.99) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f'TaylorImportance decay must be in [0, 1), got {decay}')
        self.decay = decay

    def statistic(self, mutable) -> Optional[Tensor]:
        return mutable.pop_mask_grad_statistic()

    def update(self, importance: Tensor, statistic: Tensor) -> None:
        importance.mul_(self.decay).add_(statistic.to(importance), alpha=1.0 - self.decay)


@TASK_UTILS.register_module()
class L1Importance(BaseImportance):
    """L1 norm of each element's weights (Li et al., 2016), re-read every iteration.

    The mutator gives the mutable a ``weight_norm_source``: a callable returning the summed
    absolute weights of each element (e.g. the output channels of the group's producing convs).
    """

    def statistic(self, mutable) -> Optional[Tensor]:
        return mutable.element_weight_norms()


@TASK_UTILS.register_module()
class IndexImportance(BaseImportance):
    """Fixed importance by position: lower index is more important (prunes from the end).

    The ablation baseline of the paper's Table 8; never updated.
    """

    def initial(self, num_elements: int) -> Tensor:
        return torch.arange(num_elements, 0, -1, dtype=torch.float32)


_SHORT_NAMES = {'taylor': 'TaylorImportance', 'l1': 'L1Importance', 'index': 'IndexImportance'}


def build_importance(cfg: Union[str, dict, BaseImportance, None]) -> BaseImportance:
    """Build a metric from a short name (``'taylor'``, ``'l1'``, ``'index'``) or a config dict."""
    if cfg is None:
        cfg = 'taylor'
    if isinstance(cfg, BaseImportance):
        return cfg
    if isinstance(cfg, str):
        if cfg not in _SHORT_NAMES and cfg not in _SHORT_NAMES.values():
            raise ValueError(f'Unknown importance {cfg!r}; use one of {sorted(_SHORT_NAMES)} or a '
                             'config dict of a metric registered in mmrazor TASK_UTILS')
        cfg = dict(type=_SHORT_NAMES.get(cfg, cfg))
    # Explicit scope: the caller's default scope may be another package's (e.g. a Runner's
    # 'mmpretrain'), whose registry does not hold these metrics.
    return TASK_UTILS.build(dict(cfg, _scope_=cfg.get('_scope_', 'mmrazor')))
