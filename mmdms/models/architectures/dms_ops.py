# Copyright (c) mmdms contributors. All rights reserved.
"""Layers that multiply their input channels by DMS soft masks (paper App. A.1.1).

Each is a subclass of an MMRazor dynamic op, so MMRazor's channel containers, ``to_static_op``
export and unit bookkeeping work unchanged. Only ``forward`` differs: instead of slicing weights
by a hard mask it runs the original (static) layer, with all its weights, on ``x * m``. With hard
masks this equals the pruned layer on the kept channels (zero inputs contribute nothing).

Conv and linear layers compute ``x * m`` as ``W * m`` when the weight has no more elements than
the input: the mask scales the weight's input-channel axis, ``conv(x * m, W) = conv(x, W * m)``
(zero padding commutes with a per-channel factor). It is the same function with the same
gradients (up to float rounding), with weight-sized instead of activation-sized multiplies in the
forward and backward and no masked copy of the input kept for the backward
(``benchmarks/bench_search_overhead.py``).

Norm layers: BatchNorm is channel-wise, so it runs unmasked (a mask on its input would be
normalised away). LayerNorm mixes channels: its mean and variance are taken over the kept
channels only, weighted by the soft mask, so that with hard masks it equals the pruned LayerNorm.
"""
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model.utils import _BatchNormXd
from mmengine.utils.dl_utils.parrots_wrapper import SyncBatchNorm as EngineSyncBatchNorm
from mmrazor.models.architectures.dynamic_ops import (DynamicChannelMixin, DynamicBatchNorm1d, DynamicBatchNorm2d,
                                                      DynamicBatchNormXd, DynamicConv2d,
                                                      DynamicConv2dAdaptivePadding,
                                                      DynamicLayerNorm, DynamicLinear,
                                                      DynamicSyncBatchNorm)
from mmrazor.models.mutables import MutableChannelContainer, SimpleMutableChannel
from mmrazor.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class DMSMaskContainer(MutableChannelContainer):
    """MMRazor's channel container that also assembles the soft mask of its channels.

    :attr:`soft_mask` concatenates the soft masks of the DMS mutables registered over the
    layer's channel ranges (ones where none is); it is ``None`` when no DMS mutable is registered,
    so such a layer runs without any masking.
    """

    @property
    def soft_mask(self) -> Optional[Tensor]:
        return self.mask(hard=False)

    def mask(self, hard: bool = False) -> Optional[Tensor]:
        """The soft (or, with ``hard``, the 0/1) mask over the layer's channels.

        ``None`` when no DMS mutable is registered (the layer keeps all its channels).
        """
        mutables = list(self.mutable_channels.values())
        if not any(hasattr(m, 'soft_mask') for m in mutables):
            return None
        if len(mutables) == 1:
            (start, end), = self.mutable_channels.keys()
            if start == 0 and end == self.num_channels:
                return mutables[0].hard_mask if hard else mutables[0].soft_mask
        self._fill_unregistered_range()
        parts = [(m.hard_mask if hard else m.soft_mask) if hasattr(m, 'soft_mask')
                 else m.current_mask.float() for m in self.mutable_channels.values()]
        device = next((p.device for p in parts), None)
        return torch.cat([p.to(device) for p in parts])

    def _fill_unregistered_range(self) -> None:
        """Register all-ones channels over every gap, in channel order.

        MMRazor 1.0's version builds ``SimpleMutableChannel(last_end - start)`` for a gap between
        two registered ranges, a negative width ("Trying to create tensor with negative
        dimension"); this one uses ``start - last_end``.
        """
        gaps, last_end = [], 0
        for start, end in sorted(self.mutable_channels):
            if last_end < start:
                gaps.append((last_end, start))
            last_end = max(last_end, end)
        if last_end < self.num_channels:
            gaps.append((last_end, self.num_channels))
        if not gaps and list(self.mutable_channels) == sorted(self.mutable_channels):
            return  # the usual case on every forward after the first: nothing to do
        for start, end in gaps:
            self.register_mutable(SimpleMutableChannel(end - start), start, end)
        ordered = sorted(self.mutable_channels.items())
        self.mutable_channels.clear()
        for (start, end), mutable in ordered:
            self.mutable_channels[(start, end)] = mutable


class DMSInputMaskMixin:
    """``forward`` = the static layer's forward on ``x * soft_mask`` (channel axis ``mask_dim``).

    The weight is multiplied by the mask instead when it has no more elements than the input
    (same function, fewer operations). A layer may also carry ``dms_output_mask``, a callable
    returning a mask over its output channels (the attention's heads and head dims on ``qkv``);
    it is folded into the weight's output rows and the bias the same way.
    """

    mask_dim = 1
    #: Set by the mutator when the producing BatchNorm applies this layer's input mask
    #: (:mod:`mmdms.models.mutators.norm_folding`).
    fold_input_mask = False

    def input_soft_mask(self) -> Optional[Tensor]:
        if self.fold_input_mask:
            return None
        container = self.get_mutable_attr('in_channels')
        return getattr(container, 'soft_mask', None)

    def output_soft_mask(self) -> Optional[Tensor]:
        source = getattr(self, 'dms_output_mask', None)
        return None if source is None else source()

    def forward(self, x: Tensor) -> Tensor:
        mask, out_mask = self.input_soft_mask(), self.output_soft_mask()
        if mask is None and out_mask is None:
            return self.static_op_factory.forward(self, x)
        if self.weight.numel() <= x.numel():
            weight, bias = self.weight, self.bias
            if mask is not None:
                weight = weight * self.weight_mask(mask)
            if out_mask is not None:
                out_mask = out_mask.to(weight.dtype)
                weight = weight * out_mask.view(-1, *([1] * (weight.dim() - 1)))
                bias = None if bias is None else bias * out_mask
            return self.forward_with_weight(x, weight, bias)
        shape = [1] * x.dim()
        shape[self.mask_dim] = -1
        if mask is not None:
            x = x * mask.view(shape).to(x.dtype)
        out = self.static_op_factory.forward(self, x)
        if out_mask is not None:
            shape = [1] * out.dim()
            shape[self.mask_dim] = -1
            out = out * out_mask.view(shape).to(out.dtype)
        return out

    def weight_mask(self, mask: Tensor) -> Tensor:
        """``mask`` over the input channels, shaped to multiply the weight."""
        raise NotImplementedError

    def forward_with_weight(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        """The static layer's forward with ``weight`` and ``bias`` in place of its own."""
        raise NotImplementedError


class DMSConvMixin(DMSInputMaskMixin):
    """Conv weight ``(C_out, C_in / groups, k, k)``: input channel ``c`` of group ``g`` is column
    ``c mod (C_in / groups)`` of the output rows of group ``g``."""

    def weight_mask(self, mask: Tensor) -> Tensor:
        c_out, per_group = self.weight.shape[:2]
        mask = mask.to(self.weight.dtype)
        if self.groups > 1:
            mask = mask.view(self.groups, 1, per_group).expand(
                self.groups, c_out // self.groups, per_group).reshape(c_out, per_group)
        else:
            mask = mask.view(1, per_group)
        return mask.view(*mask.shape, *([1] * (self.weight.dim() - 2)))


@MODELS.register_module()
class DMSConv2d(DMSConvMixin, DynamicConv2d):
    """Conv2d on soft-masked input channels (depthwise convs included)."""

    def forward_with_weight(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        return nn.Conv2d._conv_forward(self, x, weight, bias)


@MODELS.register_module()
class DMSConv2dAdaptivePadding(DMSConvMixin, DynamicConv2dAdaptivePadding):
    """mmcv's TF-'same'-padding Conv2d on soft-masked input channels."""

    def forward_with_weight(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        # mmcv's Conv2dAdaptivePadding.forward with ``weight`` and ``bias``
        img_h, img_w = x.shape[-2:]
        kernel_h, kernel_w = weight.shape[-2:]
        pads = []
        for size, kernel, stride, dilation in ((img_w, kernel_w, self.stride[1],
                                                self.dilation[1]),
                                               (img_h, kernel_h, self.stride[0],
                                                self.dilation[0])):
            out = math.ceil(size / stride)
            pad = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
            pads += [pad // 2, pad - pad // 2]
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


@MODELS.register_module()
class DMSLinear(DMSInputMaskMixin, DynamicLinear):
    """Linear on soft-masked input features (last axis)."""

    mask_dim = -1

    def weight_mask(self, mask: Tensor) -> Tensor:
        return mask.to(self.weight.dtype).view(1, -1)

    def forward_with_weight(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        return F.linear(x, weight, bias)


class DMSBatchNormMixin:
    """BatchNorm is channel-wise: run the full layer unmasked (export still slices it).

    With ``fold_output_mask`` (set by the mutator where the only reader of the output is one
    conv, through a positively homogeneous activation) the mask of its output channels scales
    ``gamma`` and ``beta`` instead of that conv's input: the same function, channel-sized work.
    """

    #: Set by the mutator (:mod:`mmdms.models.mutators.norm_folding`).
    fold_output_mask = False

    def forward(self, x: Tensor) -> Tensor:
        mask = getattr(self.get_mutable_attr('out_channels'), 'soft_mask', None) \
            if self.fold_output_mask else None
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


@MODELS.register_module()
class DMSLayerNorm(DynamicLayerNorm):
    """LayerNorm whose statistics run over the kept features, weighted by the soft mask.

    ``mu = sum(m x) / sum(m)``, ``var = sum(m (x - mu)^2) / sum(m)``; the output of a pruned
    feature is multiplied by its mask. With hard masks this is exactly the pruned LayerNorm on the
    kept features (and 0 elsewhere).
    """

    def forward(self, x: Tensor) -> Tensor:
        container = self.get_mutable_attr('in_channels')
        mask = getattr(container, 'soft_mask', None)
        if mask is None:
            return nn.LayerNorm.forward(self, x)
        mask = mask.to(x.dtype)
        total = mask.sum()
        # the mask-weighted sums as matrix-vector products (no masked copy of x), and the
        # output mask folded into the affine parameters: (x - mu) * rstd * (w m) + b m
        mean = torch.matmul(x, mask).unsqueeze(-1) / total
        diff = x - mean
        var = torch.matmul(diff * diff, mask).unsqueeze(-1) / total
        out = diff * torch.rsqrt(var + self.eps)
        if self.elementwise_affine and self.bias is not None:
            return torch.addcmul(self.bias * mask, out, self.weight * mask)
        return out * (self.weight * mask if self.elementwise_affine else mask)


#: Which DMS layer replaces which layer type in a searched group.
DMS_OP_MAP = {
    nn.Conv2d: DMSConv2d,
    nn.Linear: DMSLinear,
    nn.BatchNorm1d: DMSBatchNorm1d,
    nn.BatchNorm2d: DMSBatchNorm2d,
    nn.SyncBatchNorm: DMSSyncBatchNorm,
    EngineSyncBatchNorm: DMSSyncBatchNorm,
    _BatchNormXd: DMSBatchNormXd,
    nn.LayerNorm: DMSLayerNorm,
}


def _register_mmcv_ops() -> None:
    from mmcv.cnn.bricks import Conv2dAdaptivePadding
    DMS_OP_MAP[Conv2dAdaptivePadding] = DMSConv2dAdaptivePadding


_register_mmcv_ops()


def dms_op_type(layer: nn.Module) -> Optional[type]:
    """The DMS op for ``layer``'s type or its nearest base class in :data:`DMS_OP_MAP`."""
    for cls in type(layer).__mro__:
        if cls in DMS_OP_MAP:
            return DMS_OP_MAP[cls]
    return None


def replace_with_dms_op(model: nn.Module, name: str) -> nn.Module:
    """Swap layer ``name`` of ``model`` for its DMS op, keeping weights, buffers and mode.

    MMRazor's own ``convert_from`` builds a freshly initialised layer (it expects weights to be
    loaded afterwards); DMS keeps the supernet's, e.g. a pretrained one for DMS_p. A layer that
    already is a dynamic op, or has no DMS op, is returned unchanged.
    """
    parent_name, _, attr = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    layer = getattr(parent, attr)
    dms_type = dms_op_type(layer)
    if dms_type is None or isinstance(layer, DynamicChannelMixin):
        return layer
    new = dms_type.convert_from(layer)
    new.load_state_dict(layer.state_dict(), strict=False)
    param = next(layer.parameters(), None)
    if param is not None:
        new.to(param.device)
    new.train(layer.training)
    for param_name, p in layer.named_parameters(recurse=False):
        getattr(new, param_name).requires_grad_(p.requires_grad)
    setattr(parent, attr, new)
    return new
