# Copyright (c) mmdms contributors. All rights reserved.
"""Layer rule of BatchNorm (1d, 2d, mmengine's Xd, SyncBatchNorm).

BatchNorm is channel-wise, so it runs unmasked (a mask on its input would be normalised away);
its MACs are ``2 * elements`` in eval mode (1 without affine), its parameters ``2 C``; the
export slices its affine parameters and running statistics. A ``BatchNorm1d`` normalises axis 1
of a 2-D or 3-D input: LeViT's ``LinearBatchNorm`` feeds it the ``(B * N, C)`` tokens of a
linear layer, whose channels are its last axis.
"""
from typing import Optional, Sequence, Tuple

import torch.nn as nn
import torch.nn.functional as F
from mmengine.model.utils import _BatchNormXd
from mmengine.utils.dl_utils.parrots_wrapper import SyncBatchNorm as EngineSyncBatchNorm
from mmrazor.models.architectures.dynamic_ops import (DynamicBatchNorm1d, DynamicBatchNorm2d,
                                                      DynamicBatchNormXd, DynamicSyncBatchNorm)
from mmrazor.registry import MODELS
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from .base import (LayerCall, LayerRule, channelwise_indices, register_layer_rule,
                   select_param)


class DMSBatchNormMixin:
    """BatchNorm is channel-wise: run the full layer unmasked (export still slices it).

    With ``fold_output_mask`` (set by the mutator where the only reader of the output is one
    conv, through a positively homogeneous activation) the mask of its output channels scales
    ``gamma`` and ``beta`` instead of that conv's input: the same function, channel-sized work.
    A ``dms_output_mask`` (a callable, as on a DMS linear) scales them too.
    """

    #: Set by the mutator (:mod:`mmdms.models.mutators.norm_folding`).
    fold_output_mask = False

    def forward(self, x: Tensor) -> Tensor:
        mask = getattr(self.get_mutable_attr('out_channels'), 'soft_mask', None) \
            if self.fold_output_mask else None
        # a mask over the output channels set on the layer itself (LeViT's attention heads on
        # the BatchNorm after its qkv linear: a zeroed linear row is not zero after the norm)
        source = getattr(self, 'dms_output_mask', None)
        if source is not None:  # multiplied in x's dtype, as the separate masks would be
            extra = source().to(x.dtype)
            mask = extra if mask is None else mask.to(x.dtype) * extra
        if mask is None:
            return self.static_op_factory.forward(self, x)
        mask = mask.to(x.dtype)
        weight = mask if self.weight is None else self.weight * mask
        bias = None if self.bias is None else self.bias * mask
        return self._batch_norm(x, weight, bias)

    def _batch_norm(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        """torch's ``_BatchNorm.forward`` with ``weight`` and ``bias`` in place of its own."""
        self._check_input_dim(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or (self.running_mean is None and
                                            self.running_var is None)
        track = not self.training or self.track_running_stats
        return F.batch_norm(x, self.running_mean if track else None,
                            self.running_var if track else None, weight, bias,
                            use_batch_stats, factor, self.eps)


@MODELS.register_module()
class DMSBatchNorm1d(DMSBatchNormMixin, DynamicBatchNorm1d):
    pass


@MODELS.register_module()
class DMSBatchNorm2d(DMSBatchNormMixin, DynamicBatchNorm2d):
    pass


@MODELS.register_module()
class DMSBatchNormXd(DMSBatchNormMixin, DynamicBatchNormXd):
    pass


@MODELS.register_module()
class DMSSyncBatchNorm(DMSBatchNormMixin, DynamicSyncBatchNorm):
    pass


@register_layer_rule
class BatchNormRule(LayerRule):
    """Every ``_BatchNorm`` (the DMS op is chosen by its exact kind)."""

    module_types = (_BatchNorm, )
    kind = 'bn'
    dms_ops = {nn.BatchNorm1d: DMSBatchNorm1d, nn.BatchNorm2d: DMSBatchNorm2d,
               nn.SyncBatchNorm: DMSSyncBatchNorm, EngineSyncBatchNorm: DMSSyncBatchNorm,
               _BatchNormXd: DMSBatchNormXd}

    def channels(self, module: nn.Module) -> Tuple[int, int]:
        return module.num_features, module.num_features

    def record(self, name: str, module: nn.Module, x: Tensor, out: Tensor) -> LayerCall:
        return LayerCall(name, self.kind, module.num_features, module.num_features,
                         x.numel() // (out.shape[0] * module.num_features), affine=module.affine)

    def channelwise(self, call: LayerCall) -> bool:
        return True

    def macs(self, call: LayerCall, widths: tuple):
        return (2 if call.affine else 1) * call.positions * widths[0]

    def params(self, call: LayerCall, widths: tuple):
        return 2 * widths[0] if call.affine else 0

    def prune(self, module: nn.Module, kept_in: Optional[Sequence[int]],
              kept_out: Optional[Sequence[int]], name: str) -> None:
        kept = channelwise_indices(kept_in, kept_out, name)
        if module.affine:
            select_param(module, 'weight', 0, kept)
            select_param(module, 'bias', 0, kept)
        for buffer in ('running_mean', 'running_var'):
            if getattr(module, buffer, None) is not None:
                select_param(module, buffer, 0, kept)
        module.num_features = len(kept) if kept is not None else module.num_features


@register_layer_rule
class BatchNorm1dRule(BatchNormRule):
    """``nn.BatchNorm1d``: counted and sliced like every BatchNorm, and made prunable in MMRazor's
    pruning check, whose pruned copy knows BatchNorm2d but not BatchNorm1d (every width through
    one, e.g. all of LeViT's linear + BatchNorm1d layers, was left unsearched)."""

    module_types = (nn.BatchNorm1d, )
    check_op = DynamicBatchNorm1d
