# Copyright (c) mmdms contributors. All rights reserved.
"""Layer rule of 2-D transposed convolutions (Mask R-CNN's mask-head upsampling): counted, not
searched.

* MACs: FlopAnalyzer's count of a transposed conv, ``k_h k_w (C_in / groups) C_out`` per
  *input* position (each input pixel spreads over a ``k_h x k_w`` patch of the output);
* parameters: the weight ``(C_in, C_out / groups, k_h, k_w)`` and the bias;
* no DMS op, so no width through it is searched (MMRazor's pruning check keeps a width through a
  layer with parameters it cannot slice fixed); before this rule the estimator did not count it
  at all, and Mask R-CNN's MACs were 19% under FlopAnalyzer's.
"""
from typing import Optional, Sequence, Tuple

import torch.nn as nn
from torch import Tensor

from .base import LayerCall, LayerRule, SubnetError, register_layer_rule
from .conv import conv_call


@register_layer_rule
class ConvTransposeRule(LayerRule):
    """``nn.ConvTranspose2d``."""

    module_types = (nn.ConvTranspose2d, )
    kind = 'conv_transpose'

    def channels(self, module: nn.Module) -> Tuple[int, int]:
        return module.in_channels, module.out_channels

    def record(self, name: str, module: nn.Module, x: Tensor, out: Tensor) -> LayerCall:
        return conv_call(name, self.kind, module, x, positions=x[0, 0].numel())

    def macs(self, call: LayerCall, widths: tuple):
        c_in, c_out = widths
        return call.kernel * call.positions * c_in * c_out / call.groups

    def params(self, call: LayerCall, widths: tuple):
        c_in, c_out = widths
        weight = call.kernel * c_in * c_out / call.groups
        return weight + c_out if call.bias else weight

    def prune(self, module: nn.Module, kept_in: Optional[Sequence[int]],
              kept_out: Optional[Sequence[int]], name: str) -> None:
        if kept_in is not None or kept_out is not None:
            raise SubnetError(f"'{name}': pruning a transposed conv is not supported (its "
                              'widths are not searched)')
