# Copyright (c) mmdms contributors. All rights reserved.
"""Element importance metrics for the DMS top-k (paper Eq. 4 and the Table 8 ablation).

A metric is registered in mmrazor's ``TASK_UTILS`` and named in a mutable's config, e.g.
``importance=dict(type='TaylorImportance', decay=0.99)`` or the short names ``'taylor'``,
``'l1'``, ``'index'``. Importance is a buffer of the mutable; it is never trained by gradient
descent. A metric turns what one iteration observed on this rank into a *statistic*; the
statistics of all ranks are averaged (:func:`mmdms.models.utils.sync_importance`) before
:meth:`BaseImportance.update` folds them in, so every rank holds the same importance.
"""
from typing import Dict, Optional, Union

import torch
from mmrazor.registry import TASK_UTILS
from torch import Tensor


class BaseImportance:
    """Interface of an importance metric.

    Attributes:
        uses_mask_grad (bool): the metric needs ``dL/dm`` of the soft mask every iteration.
        uses_weight_norms (bool): the metric needs the mutable's ``weight_norm_source``.
    """

    uses_mask_grad = False
    uses_weight_norms = False

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

    The importance of an element is the summed absolute weight of the layers producing it, as
    the mutable's ``weight_norm_source`` returns it. The DMSMutator's channel groups have one:
    the output-channel rows of the group's conv / linear layers
    (:class:`~mmdms.models.mutables.dms_channel_unit.ProducerWeightNorms`); with ``step > 1`` an
    element's norm is the sum over its channels. Depths and the ViT widths built from the ViT
    layout have none: building them with ``'l1'`` fails (:func:`check_weight_norm_sources`).
    """

    uses_weight_norms = True

    def statistic(self, mutable) -> Optional[Tensor]:
        return mutable.element_weight_norms()


@TASK_UTILS.register_module()
class IndexImportance(BaseImportance):
    """Fixed importance by position: lower index is more important (prunes from the end).

    The ablation baseline of the paper's Table 8; never updated.
    """

    def initial(self, num_elements: int) -> Tensor:
        return torch.arange(num_elements, 0, -1, dtype=torch.float32)


def check_weight_norm_sources(named_mutables: Dict[str, object]) -> None:
    """One error for every mutable whose metric needs weight norms that it cannot get.

    Call once the search space is built: ``L1Importance`` reads a ``weight_norm_source`` that
    only the layers producing a width can provide, so a mutable without one would fail at the
    first importance update (or, worse, never learn its ranking).

    Args:
        named_mutables (dict): the DMS mutables of a search space by name.

    Raises:
        ValueError: naming every such mutable and the fix.
    """
    missing = [name for name, mutable in named_mutables.items()
               if getattr(mutable.importance_metric, 'uses_weight_norms', False)
               and getattr(mutable, 'weight_norm_source', None) is None]
    if missing:
        raise ValueError(
            f"importance='l1' needs the weights producing each element, and "
            f"{len(missing)} mutable(s) have none: {', '.join(missing)} (depth stages and the "
            "widths built from a ViT layout never have; a channel group has when a conv or "
            "linear layer produces it). Use importance='taylor' (the paper's) or 'index' for "
            'them: DMSMutator(depth_args=dict(importance=...)) for depths, '
            'channel_unit_cfg.default_args for widths.')


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
