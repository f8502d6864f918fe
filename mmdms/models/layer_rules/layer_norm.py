# Copyright (c) mmdms contributors. All rights reserved.
"""Layer rule of LayerNorm over the last axis.

LayerNorm mixes channels: its mean and variance are taken over the kept channels only, weighted
by the soft mask, so that with hard masks it equals the pruned LayerNorm. MACs ``5 * elements``
(4 without affine), as FlopAnalyzer counts; the export slices its affine parameters.
"""
from typing import Optional, Sequence, Tuple

import torch.nn as nn
from mmrazor.models.architectures.dynamic_ops import DynamicLayerNorm
from mmrazor.registry import MODELS
from torch import Tensor

from mmdms.ops import masked_layer_norm
from .base import (LayerCall, LayerRule, SubnetError, channelwise_indices, register_layer_rule,
                   select_param)


@MODELS.register_module()
class DMSLayerNorm(DynamicLayerNorm):
    """LayerNorm whose statistics run over the kept features, weighted by the soft mask.

    ``mu = sum(m x) / sum(m)``, ``var = sum(m (x - mu)^2) / sum(m)``; the output of a pruned
    feature is multiplied by its mask. With hard masks this is exactly the pruned LayerNorm on the
    kept features (and 0 elsewhere). :func:`mmdms.ops.masked_layer_norm` computes it, with its
    backward written out.
    """

    def forward(self, x: Tensor) -> Tensor:
        container = self.get_mutable_attr('in_channels')
        mask = getattr(container, 'soft_mask', None)
        if mask is None:
            return nn.LayerNorm.forward(self, x)
        weight, bias = (self.weight, self.bias) if self.elementwise_affine else (None, None)
        return masked_layer_norm(x, mask.to(x.dtype), weight, bias, self.eps)


class DynamicLastAxisLayerNorm(DynamicLayerNorm):
    """MMRazor's ``DynamicLayerNorm`` (the op of its pruning check) for an input of any rank
    normalised over its last axis; MMRazor's own accepts 3-D inputs only. It keeps the
    weights."""

    @classmethod
    def convert_from(cls, module: nn.LayerNorm) -> 'DynamicLastAxisLayerNorm':
        new = cls(module.normalized_shape, eps=module.eps,
                  elementwise_affine=module.elementwise_affine)
        new.load_state_dict(module.state_dict())
        return new

    def _check_input_dim(self, input: Tensor) -> None:
        if len(self.normalized_shape) != 1:
            raise ValueError('only a LayerNorm over the last axis can be pruned, this one '
                             f'normalises {tuple(self.normalized_shape)}')


class NormRule(LayerRule):
    """Shared counting of the layer and group norms: ``5 * elements`` MACs (4 without affine),
    ``2 C`` parameters."""

    kind = 'norm'

    def record(self, name: str, module: nn.Module, x: Tensor, out: Tensor) -> LayerCall:
        channels = self.channels(module)[0]
        return LayerCall(name, self.kind, channels, channels,
                         x.numel() // (out.shape[0] * channels), affine=self.affine(module))

    def affine(self, module: nn.Module) -> bool:
        raise NotImplementedError

    def channelwise(self, call: LayerCall) -> bool:
        return True

    def macs(self, call: LayerCall, widths: tuple):
        return (5 if call.affine else 4) * call.positions * widths[0]

    def params(self, call: LayerCall, widths: tuple):
        return 2 * widths[0] if call.affine else 0


@register_layer_rule
class LayerNormRule(NormRule):
    """``nn.LayerNorm``; only one over the last axis can be pruned."""

    module_types = (nn.LayerNorm, )
    dms_ops = {nn.LayerNorm: DMSLayerNorm}
    check_op = DynamicLastAxisLayerNorm

    def channels(self, module: nn.Module) -> Tuple[int, int]:
        return module.normalized_shape[-1], module.normalized_shape[-1]

    def affine(self, module: nn.Module) -> bool:
        return module.elementwise_affine

    def prune(self, module: nn.Module, kept_in: Optional[Sequence[int]],
              kept_out: Optional[Sequence[int]], name: str) -> None:
        if len(module.normalized_shape) != 1:
            raise SubnetError(f"'{name}': only a LayerNorm over the last axis can be pruned")
        kept = channelwise_indices(kept_in, kept_out, name)
        if module.elementwise_affine:
            select_param(module, 'weight', 0, kept)
            select_param(module, 'bias', 0, kept)
        if kept is not None:
            module.normalized_shape = (len(kept), )


@register_layer_rule
class GroupNormRule(NormRule):
    """``nn.GroupNorm``: counted; pruning it is refused (its groups would change)."""

    module_types = (nn.GroupNorm, )

    def channels(self, module: nn.Module) -> Tuple[int, int]:
        return module.num_channels, module.num_channels

    def affine(self, module: nn.Module) -> bool:
        return module.affine

    def prune(self, module: nn.Module, kept_in: Optional[Sequence[int]],
              kept_out: Optional[Sequence[int]], name: str) -> None:
        if kept_in is not None or kept_out is not None:
            raise SubnetError(f"'{name}': pruning a GroupNorm is not supported")
