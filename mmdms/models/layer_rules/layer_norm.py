# Copyright (c) mmdms contributors. All rights reserved.
"""Layer rules of LayerNorm over the last axis (mmpretrain's channel-first ``LayerNorm2d``
included) and of GroupNorm.

LayerNorm mixes channels: its mean and variance are taken over the kept channels only, weighted
by the soft mask, so that with hard masks it equals the pruned LayerNorm. MACs ``5 * elements``
(4 without affine), as FlopAnalyzer counts; the export slices its affine parameters. A GroupNorm
with one group (PoolFormer's, RIFormer's: a LayerNorm over channels and positions) is searched
the same way.

A GroupNorm with ``G > 1`` groups of ``g = C / G`` channels (mmdet's GN heads: FCOS, ATSS,
...) is pruned by whole groups: its rule's :meth:`~GroupNormRule.channel_step` is ``g``, so the
mutator gives every width through it a step that is a multiple of ``g``, and a kept group's
statistics are those of the unpruned layer. Its DMS op therefore runs the whole layer unmasked,
as a BatchNorm's does (the layers reading its output apply the mask), and the export keeps the
kept groups (``num_groups`` = kept channels / ``g``, affine parameters sliced). Kept channels
that are not whole groups are refused (:class:`~.base.SubnetError`), and so is such a mask in
MMRazor's pruning check (:class:`DynamicGroupNorm`).
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmrazor.models.architectures.dynamic_ops import DynamicLayerNorm
from mmrazor.models.architectures.dynamic_ops.mixins.dynamic_layernorm_mixins import \
    DynamicLayerNormMixin
from mmpretrain.models.utils.norm import LayerNorm2d
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


class _ChannelFirstForward:
    """mmpretrain ``LayerNorm2d.forward(x, data_format)`` around a last-axis LayerNorm's forward:
    a ``(N, C, H, W)`` input (``'channel_first'``) is normalised over C through a permute, a
    ``(N, H, W, C)`` one (``'channel_last'``) directly."""

    def forward(self, x: Tensor, data_format: str = 'channel_first') -> Tensor:
        if data_format == 'channel_last':
            return super().forward(x)
        if data_format == 'channel_first':
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()
        return x  # what LayerNorm2d returns for any other format


@MODELS.register_module()
class DMSLayerNorm2d(_ChannelFirstForward, DMSLayerNorm):
    """:class:`DMSLayerNorm` with mmpretrain ``LayerNorm2d``'s ``data_format``."""


class DynamicLayerNorm2d(_ChannelFirstForward, DynamicLastAxisLayerNorm):
    """The op of MMRazor's pruning check for mmpretrain's ``LayerNorm2d``."""


@register_layer_rule
class LayerNorm2dRule(LayerNormRule):
    """mmpretrain's ``LayerNorm2d`` (ConvNeXt, EdgeNeXt, HorNet): a LayerNorm over the channels
    of an ``(N, C, H, W)`` input, or of an ``(N, H, W, C)`` one with
    ``data_format='channel_last'``. It is a leaf of the trace (its forward asserts on the
    input's rank, which FX cannot trace); the export also sets its ``num_channels``."""

    module_types = (LayerNorm2d, )
    dms_ops = {LayerNorm2d: DMSLayerNorm2d}
    check_op = DynamicLayerNorm2d
    leaf = True

    def prune(self, module: nn.Module, kept_in: Optional[Sequence[int]],
              kept_out: Optional[Sequence[int]], name: str) -> None:
        super().prune(module, kept_in, kept_out, name)
        module.num_channels = module.normalized_shape[0]


class _GroupNormChannels(DynamicLayerNormMixin):
    """MMRazor's channel interface of a LayerNorm (``in`` / ``out_channels`` are its
    ``num_features``), for ``nn.GroupNorm``."""

    @property
    def num_features(self) -> int:
        return self.num_channels

    def _register_mutable_num_features(self, mutable) -> None:
        if mutable.current_mask.size(0) != self.num_channels:
            raise ValueError(f'Expect mask size of mutable to be {self.num_channels} as '
                             f'num_channels, but got: {mutable.current_mask.size(0)}.')
        self.mutable_attrs['num_features'] = mutable

    @property
    def static_op_factory(self):
        return nn.GroupNorm

    @classmethod
    def convert_from(cls, module: nn.GroupNorm) -> '_GroupNormChannels':
        new = cls(module.num_groups, module.num_channels, eps=module.eps, affine=module.affine)
        new.load_state_dict(module.state_dict())
        return new

    def _kept_mask(self) -> Optional[Tensor]:
        if 'num_features' not in self.mutable_attrs:
            return None
        return self.mutable_attrs['num_features'].current_mask


def kept_groups(kept: Sequence[int], num_channels: int, num_groups: int) -> Optional[int]:
    """How many whole groups the channel indices ``kept`` of a GroupNorm (``num_channels``
    channels in ``num_groups`` groups) are, each group's channels consecutive and in order;
    ``None`` if they are not whole groups."""
    size = num_channels // num_groups
    kept = [int(i) for i in kept]
    if len(kept) % size:
        return None
    for first in range(0, len(kept), size):
        start = kept[first]
        if start % size or kept[first:first + size] != list(range(start, start + size)):
            return None
    return len(kept) // size


def _mask_groups(mask: Tensor, num_groups: int) -> Optional[int]:
    """Whole groups a boolean channel mask keeps of a GroupNorm, ``None`` if it cuts a group."""
    per_group = mask.reshape(num_groups, -1)
    kept = per_group.all(dim=1)
    if not bool((per_group.any(dim=1) == kept).all()):
        return None
    return int(kept.sum())


@MODELS.register_module()
class DynamicGroupNorm(nn.GroupNorm, _GroupNormChannels):
    """The op of MMRazor's pruning check for ``nn.GroupNorm``: it keeps the channels of its
    mask, with the statistics of the pruned GroupNorm. One group (a LayerNorm over channels and
    positions, PoolFormer's) may keep any channels; with more groups the mask must keep whole
    groups (the width's step makes it so, :meth:`GroupNormRule.channel_step`), and any other
    mask fails the check (it cannot be exported), so such a width stays fixed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mutable_attrs = nn.ModuleDict()

    def forward(self, x: Tensor) -> Tensor:
        mask = self._kept_mask()
        if mask is None or bool(mask.all()):
            return nn.GroupNorm.forward(self, x)
        groups = 1 if self.num_groups == 1 else _mask_groups(mask, self.num_groups)
        if groups is None:
            raise RuntimeError(f'a GroupNorm with {self.num_groups} groups of '
                               f'{self.num_channels // self.num_groups} channels can only keep '
                               'whole groups')
        weight, bias = (self.weight[mask], self.bias[mask]) if self.affine else (None, None)
        return F.group_norm(x, groups, weight, bias, self.eps)


@MODELS.register_module()
class DMSGroupNorm(nn.GroupNorm, _GroupNormChannels):
    """The DMS op of ``nn.GroupNorm``.

    One group: the statistics run over the kept channels (and all positions), weighted by the
    soft mask; the output of a pruned channel is multiplied by its mask. With hard masks this is
    the pruned GroupNorm on the kept channels (0 elsewhere).

    More groups: the width keeps or prunes each group whole (its step is a multiple of the
    group size), so a kept group's statistics do not depend on the mask and the layer runs
    unmasked, as a BatchNorm's DMS op does; the layers reading its output apply the mask. With
    hard masks its kept channels are the pruned GroupNorm's output.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mutable_attrs = nn.ModuleDict()

    def forward(self, x: Tensor) -> Tensor:
        if self.num_groups != 1:
            return nn.GroupNorm.forward(self, x)
        container = self.get_mutable_attr('in_channels')
        mask = getattr(container, 'soft_mask', None)
        if mask is None:
            return nn.GroupNorm.forward(self, x)
        shape = (1, -1) + (1, ) * (x.dim() - 2)
        m = mask.to(x.dtype).view(shape)
        count = mask.sum().to(x.dtype) * x[0, 0].numel()
        dims = tuple(range(1, x.dim()))
        mean = (x * m).sum(dim=dims, keepdim=True) / count
        diff = x - mean
        var = (diff * diff * m).sum(dim=dims, keepdim=True) / count
        out = diff * torch.rsqrt(var + self.eps)
        if not self.affine:
            return out * m
        return out * (self.weight.view(shape) * m) + self.bias.view(shape) * m


@register_layer_rule
class GroupNormRule(NormRule):
    """``nn.GroupNorm``: one group (a LayerNorm over channels and positions) is searched and
    pruned like a LayerNorm; one with ``G > 1`` groups is pruned by whole groups of ``C / G``
    channels (:meth:`channel_step`), its ``num_groups`` set to the groups kept. MACs and
    parameters are those of a LayerNorm of the kept channels (FlopAnalyzer's count does not
    depend on the groups)."""

    module_types = (nn.GroupNorm, )
    dms_ops = {nn.GroupNorm: DMSGroupNorm}
    check_op = DynamicGroupNorm

    def channels(self, module: nn.Module) -> Tuple[int, int]:
        return module.num_channels, module.num_channels

    def channel_step(self, module: nn.Module) -> int:
        """Channels per group with more than one group (each group kept or pruned whole);
        1 for one group, whose statistics the DMS op takes over the kept channels."""
        return 1 if module.num_groups == 1 else module.num_channels // module.num_groups

    def affine(self, module: nn.Module) -> bool:
        return module.affine

    def prune(self, module: nn.Module, kept_in: Optional[Sequence[int]],
              kept_out: Optional[Sequence[int]], name: str) -> None:
        if kept_in is None and kept_out is None:
            return
        kept = channelwise_indices(kept_in, kept_out, name)
        groups = 1 if module.num_groups == 1 else \
            kept_groups(kept, module.num_channels, module.num_groups)
        if groups is None:
            size = module.num_channels // module.num_groups
            raise SubnetError(
                f"'{name}': a GroupNorm with {module.num_groups} groups of {size} channels "
                f'keeps whole groups only, not channels {list(kept)} (search its width with '
                f'a step that is a multiple of {size})')
        if module.affine:
            select_param(module, 'weight', 0, kept)
            select_param(module, 'bias', 0, kept)
        module.num_channels = len(kept)
        module.num_groups = groups
