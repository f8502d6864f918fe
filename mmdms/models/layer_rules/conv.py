# Copyright (c) mmdms contributors. All rights reserved.
"""Layer rule of 2-D convolutions: plain, grouped and depthwise, and mmcv's TF-'same'-padding
conv.

* masked forward: the input mask scales the weight's input-channel columns (``W * m``) or the
  input, whichever is smaller (:class:`~.masked_forward.DMSInputMaskMixin`);
* MACs: ``k_h k_w (C_in / groups) C_out H_out W_out`` (FlopAnalyzer's count); a depthwise conv
  (``groups = C_in = C_out``) scales with ``C``, not ``C^2``;
* export: plain convs slice input and output channels, depthwise convs their one channel axis
  (``groups`` follows). A grouped conv is sliced group by group: each group must keep the same
  number of input channels and of output channels (MMRazor's channel graph ties channel ``j`` of
  every group into one width, so the search keeps the same channels in every group);
* latency: the static conv at the kept widths on an input of the recorded shape.
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks import Conv2dAdaptivePadding
from mmrazor.models.architectures.dynamic_ops import DynamicConv2d, DynamicConv2dAdaptivePadding
from mmrazor.registry import MODELS
from torch import Tensor

from .base import (LayerCall, LayerRule, SubnetError, channelwise_indices, register_layer_rule,
                   select_param)
from .masked_forward import DMSInputMaskMixin


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


def _is_depthwise(module: nn.Conv2d) -> bool:
    return module.groups == module.in_channels == module.out_channels and module.groups > 1


def _per_group(kept: Optional[Sequence[int]], channels: int, groups: int, name: str,
               side: str) -> List[List[int]]:
    """``kept`` (all channels if None) split by group, as indices within the group; refused
    unless every group keeps the same, non-zero number, in group order."""
    per_group = channels // groups
    kept = list(range(channels)) if kept is None else [int(i) for i in kept]
    if any(kept[i] // per_group > kept[i + 1] // per_group for i in range(len(kept) - 1)):
        raise SubnetError(f"'{name}' (a conv with groups={groups}): its kept {side} channels "
                          'are not in group order')
    split: List[List[int]] = [[] for _ in range(groups)]
    for index in kept:
        split[index // per_group].append(index % per_group)
    counts = {len(g) for g in split}
    if len(counts) != 1 or 0 in counts:
        raise SubnetError(
            f"'{name}' is a conv with groups={groups} whose groups keep different numbers of "
            f'{side} channels ({[len(g) for g in split]}); a grouped conv needs the same number '
            'in every group (a width searched across its groups, as MMRazor ties them)')
    return split


def _prune_grouped(module: nn.Conv2d, kept_in: Optional[Sequence[int]],
                   kept_out: Optional[Sequence[int]], name: str) -> None:
    """Slice a grouped conv group by group: group ``g`` keeps its kept output rows and, in
    them, the columns of its kept input channels."""
    groups = module.groups
    ins = _per_group(kept_in, module.in_channels, groups, name, 'input')
    outs = _per_group(kept_out, module.out_channels, groups, name, 'output')
    out_per_group = module.out_channels // groups
    weight = module.weight.data
    rows = [g * out_per_group + j for g in range(groups) for j in outs[g]]
    module.weight = nn.Parameter(torch.cat([
        weight[[g * out_per_group + j for j in outs[g]]][:, ins[g]] for g in range(groups)]),
        requires_grad=module.weight.requires_grad)
    select_param(module, 'bias', 0, rows)
    module.in_channels = groups * len(ins[0])
    module.out_channels = module.weight.shape[0]


def conv_call(name: str, kind: str, module: nn.Module, x: Tensor, positions: int) -> LayerCall:
    """The record of a 2-D (transposed) conv call on input ``x`` whose kernel is applied at
    ``positions`` places per channel pair (output positions for a conv, input positions for a
    transposed conv)."""
    return LayerCall(name, kind, module.in_channels, module.out_channels, positions,
                     module.kernel_size[0] * module.kernel_size[1], module.groups,
                     bias=module.bias is not None, in_shape=tuple(x.shape[1:]))


@register_layer_rule
class ConvRule(LayerRule):
    """``nn.Conv2d`` and its subclasses (mmcv's ``Conv2dAdaptivePadding`` included)."""

    module_types = (nn.Conv2d, )
    kind = 'conv'
    dms_ops = {nn.Conv2d: DMSConv2d, Conv2dAdaptivePadding: DMSConv2dAdaptivePadding}
    searchable_weight = True
    timed = True
    produces_channels = True

    def channels(self, module: nn.Module) -> Tuple[int, int]:
        return module.in_channels, module.out_channels

    def record(self, name: str, module: nn.Module, x: Tensor, out: Tensor) -> LayerCall:
        return conv_call(name, self.kind, module, x, positions=out[0, 0].numel())

    def channelwise(self, call: LayerCall) -> bool:
        return call.depthwise

    def macs(self, call: LayerCall, widths: tuple):
        c_in, c_out = widths
        # constants first: one tensor operation per width at soft masks
        if call.depthwise:  # C_in / groups = 1
            return call.kernel * call.positions * c_out
        macs = call.kernel * call.positions * c_in * c_out
        return macs if call.groups == 1 else macs / call.groups

    def params(self, call: LayerCall, widths: tuple):
        c_in, c_out = widths
        weight = call.kernel * c_out if call.depthwise else \
            call.kernel * c_in * c_out / call.groups
        return weight + c_out if call.bias else weight

    def output_weight_norms(self, module: nn.Module, start: int, end: int) -> Tensor:
        return module.weight.detach().flatten(1)[start:end].abs().sum(dim=1)

    def prune(self, module: nn.Module, kept_in: Optional[Sequence[int]],
              kept_out: Optional[Sequence[int]], name: str) -> None:
        if _is_depthwise(module):
            kept = channelwise_indices(kept_in, kept_out, name)
            select_param(module, 'weight', 0, kept)
            select_param(module, 'bias', 0, kept)
            width = module.weight.shape[0]
            module.in_channels = module.out_channels = module.groups = width
            return
        if module.groups != 1:
            if kept_in is not None or kept_out is not None:
                _prune_grouped(module, kept_in, kept_out, name)
            return
        select_param(module, 'weight', 0, kept_out)
        select_param(module, 'weight', 1, kept_in)
        select_param(module, 'bias', 0, kept_out)
        module.out_channels, module.in_channels = module.weight.shape[:2]

    def latency_layer(self, module: nn.Module, call: LayerCall, c_in: int,
                      c_out: int) -> nn.Module:
        groups = c_in if call.depthwise else call.groups
        if call.depthwise:
            c_out = c_in
        return nn.Conv2d(c_in, c_out, module.kernel_size, module.stride, module.padding,
                         module.dilation, groups, bias=call.bias)

    def latency_input(self, call: LayerCall, c_in: int, device) -> Tensor:
        return torch.randn((1, c_in) + tuple(call.in_shape[1:]), device=device)
