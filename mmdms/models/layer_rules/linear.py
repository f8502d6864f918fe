# Copyright (c) mmdms contributors. All rights reserved.
"""Layer rule of linear layers: ``in * out * tokens`` MACs, input and output features sliced."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmrazor.models.architectures.dynamic_ops import DynamicLinear
from mmrazor.registry import MODELS
from torch import Tensor

from .base import LayerCall, LayerRule, register_layer_rule, select_param
from .masked_forward import DMSInputMaskMixin


@MODELS.register_module()
class DMSLinear(DMSInputMaskMixin, DynamicLinear):
    """Linear on soft-masked input features (last axis)."""

    mask_dim = -1

    def weight_mask(self, mask: Tensor) -> Tensor:
        return mask.to(self.weight.dtype).view(1, -1)

    def forward_with_weight(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        return F.linear(x, weight, bias)


@register_layer_rule
class LinearRule(LayerRule):
    """``nn.Linear`` and its subclasses."""

    module_types = (nn.Linear, )
    kind = 'linear'
    dms_ops = {nn.Linear: DMSLinear}
    searchable_weight = True
    timed = True
    produces_channels = True

    def channels(self, module: nn.Module) -> Tuple[int, int]:
        return module.in_features, module.out_features

    def record(self, name: str, module: nn.Module, x: Tensor, out: Tensor) -> LayerCall:
        return LayerCall(name, self.kind, module.in_features, module.out_features,
                         out.numel() // (out.shape[0] * module.out_features),
                         bias=module.bias is not None, in_shape=tuple(x.shape[1:]))

    def macs(self, call: LayerCall, widths: tuple):
        c_in, c_out = widths
        return call.positions * c_in * c_out

    def params(self, call: LayerCall, widths: tuple):
        c_in, c_out = widths
        return c_in * c_out + c_out if call.bias else c_in * c_out

    def output_weight_norms(self, module: nn.Module, start: int, end: int) -> Tensor:
        return module.weight.detach().flatten(1)[start:end].abs().sum(dim=1)

    def prune(self, module: nn.Module, kept_in: Optional[Sequence[int]],
              kept_out: Optional[Sequence[int]], name: str) -> None:
        select_param(module, 'weight', 0, kept_out)
        select_param(module, 'weight', 1, kept_in)
        select_param(module, 'bias', 0, kept_out)
        module.out_features, module.in_features = module.weight.shape

    def latency_layer(self, module: nn.Module, call: LayerCall, c_in: int,
                      c_out: int) -> nn.Module:
        return nn.Linear(c_in, c_out, bias=call.bias)

    def latency_input(self, call: LayerCall, c_in: int, device) -> Tensor:
        return torch.randn(tuple(call.in_shape[:-1]) + (c_in, ), device=device).unsqueeze(0)
