# Copyright (c) mmdms contributors. All rights reserved.
"""Layer rule of adaptive average pooling (``nn.AdaptiveAvgPool2d``).

FlopAnalyzer counts one MAC per input element. The pooling has no mask of its own: its
channels are those of the layer that reads its output (a squeeze-excitation's first conv, the
classifier's linear), which the resource estimator finds in the recorded forward
(``LayerCall.consumer``). In EfficientNet the SE poolings are over 1% of the MACs.
"""
import torch.nn as nn
from torch import Tensor

from .base import LayerCall, LayerRule, MaskReader, register_layer_rule


@register_layer_rule
class AdaptiveAvgPoolRule(LayerRule):
    module_types = (nn.AdaptiveAvgPool2d, )
    kind = 'pool'
    owns_params = False
    channels_from_consumer = True

    def record(self, name: str, module: nn.Module, x: Tensor, out: Tensor) -> LayerCall:
        return LayerCall(name, self.kind, x.shape[1], x.shape[1], x[0, 0].numel())

    def widths(self, call: LayerCall, reader: MaskReader) -> tuple:
        masks = reader.layer(call.consumer)  # no consumer: no mask
        width = reader.width(masks.in_mask, call.in_channels)
        return width, width

    def macs(self, call: LayerCall, widths: tuple):
        return call.positions * widths[0]
