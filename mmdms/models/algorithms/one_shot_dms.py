# Copyright (c) mmdms contributors. All rights reserved.
"""A one-shot supernet over a DMS search space, trained with sampled structures (the sandwich
rule): the first half of the one-shot + evolution baseline (paper Table 3, ScaleNet)."""
from typing import Dict, Sequence, Union

import torch
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper
from mmrazor.registry import MODELS
from torch import Tensor

from ..mutables.importance import IndexImportance
from ..space_structure import sample_structure, set_structure
from .dms import DMS


@MODELS.register_module()
class OneShotDMS(DMS):
    """The supernet of a DMS search space trained with hard, sampled structures.

    Every training step runs the batch through ``sandwich`` structures (default: the largest,
    the smallest and two random ones, BigNAS's sandwich rule, as ScaleNet trains its
    super-supernet), back-propagates the mean of their losses and takes one optimiser step.
    Structures are the DMS encoding (kept elements per width and depth), with fixed hard masks:
    the widths keep their first channels and the stages their first blocks (``importance``
    ``'index'`` in the mutator's ``channel_unit_cfg`` and ``depth_args``, required), so every
    structure shares the weights of its larger ones. The ratios are not trained; no resource
    loss is added. Outside a training step the largest structure is set, except while a search
    (``EvolutionSearchHook``) sets its own; the structure a search leaves set is what
    ``tools/export_subnet.py`` exports from a checkpoint.

    Args:
        architecture, mutator, resource_estimator, data_preprocessor, init_cfg: as for
            :class:`~mmdms.models.DMS`.
        sandwich (sequence of str): the structures of one step, each ``'max'``, ``'min'`` or
            ``'random'``.
        min_width_fraction (float): every sampled width keeps at least this fraction of its
            channels (default 0.25; BigNAS's and ScaleNet's smallest models are a fraction of the
            largest, not one channel per layer, which cannot learn). The evolution searches the
            same range.

    Raises:
        ValueError: a mutable ranks its elements by anything but their index, or ``sandwich``
            is empty or names an unknown kind.
    """

    def __init__(self,
                 architecture: Union[BaseModel, Dict],
                 mutator: Union[Dict, torch.nn.Module] = dict(type='DMSMutator'),
                 resource_estimator: Dict = dict(type='DMSResourceEstimator'),
                 sandwich: Sequence[str] = ('max', 'min', 'random', 'random'),
                 min_width_fraction: float = 0.25,
                 data_preprocessor=None,
                 init_cfg=None) -> None:
        super().__init__(architecture, mutator, resource_estimator,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if not sandwich or any(kind not in ('max', 'min', 'random') for kind in sandwich):
            raise ValueError(f"OneShotDMS: sandwich must be a non-empty sequence of 'max', "
                             f"'min' and 'random', got {sandwich!r}")
        self.sandwich = tuple(sandwich)
        if not 0 <= min_width_fraction <= 1:
            raise ValueError(f'OneShotDMS: min_width_fraction must be in [0, 1], got '
                             f'{min_width_fraction}')
        self.min_width_fraction = min_width_fraction
        ranked = [name for name, m in self._named_mutables()
                  if not isinstance(m.importance_metric, IndexImportance)]
        if ranked:
            raise ValueError(
                f'OneShotDMS needs weight-sharing structures (the first channels and blocks): '
                f'the mutable(s) {", ".join(ranked[:4])}{" ..." if len(ranked) > 4 else ""} '
                "rank by another importance. Set importance='index' in the mutator: "
                "channel_unit_cfg=dict(type='DMSChannelUnit', default_args=dict("
                "importance='index')), depth_args=dict(importance='index')")
        for _, mutable in self._named_mutables():
            mutable.dms_ratio.requires_grad_(False)
            mutable.is_fixed = True  # hard masks in the forward pass
        set_structure(self, sample_structure(self, 'max'))

    def _named_mutables(self):
        space = self.space
        return [(f'width:{k}', g.mutable) for k, g in space.widths.items()] + \
            [(f'depth:{k}', s.mutable) for k, s in space.stages.items()]

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapper) -> Dict[str, Tensor]:
        """One optimiser step on the mean loss of the sandwich's structures."""
        data = self.data_preprocessor(data, True)
        log_vars: Dict[str, Tensor] = {}
        total = 0.0
        for index, kind in enumerate(self.sandwich):
            set_structure(self, sample_structure(self, kind,
                                                 min_width_fraction=self.min_width_fraction))
            with optim_wrapper.optim_context(self):
                losses = self._run_forward(data, mode='loss')
            parsed, parts = self.parse_losses(losses)
            optim_wrapper.backward(parsed / len(self.sandwich))
            total = total + parsed.detach()
            log_vars[f'loss_{kind}{index}'] = parts['loss'].detach()
        optim_wrapper.step()
        optim_wrapper.zero_grad()
        set_structure(self, sample_structure(self, 'max'))
        log_vars['loss'] = total / len(self.sandwich)
        return log_vars
