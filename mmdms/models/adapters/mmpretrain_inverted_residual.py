# Copyright (c) mmdms contributors. All rights reserved.
"""mmpretrain's MobileNetV2 / EfficientNet family (and mmdms's ScalableMobileNetV2 supernet,
built of the same blocks): inverted residuals and EfficientNet's edge residuals with a shortcut
are identity-residual blocks. Their widths need nothing beyond the layer rules (the tracer
follows depthwise convs and squeeze-excitation). Each branch ends with a conv and a BatchNorm
and no activation, into which the mutator folds the block's depth mask."""
import torch.nn as nn

from mmdms.registry import ADAPTERS
from .base import ResidualBlockAdapter


@ADAPTERS.register_module()
class InvertedResidualAdapter(ResidualBlockAdapter):
    """EfficientNet's (and MobileNetV3's) inverted residual."""
    module_type = 'mmpretrain.models.utils.inverted_residual.InvertedResidual'
    identity_when = 'with_res_shortcut'
    branch_conv = 'linear_conv'


@ADAPTERS.register_module()
class MobileNetV2InvertedResidualAdapter(ResidualBlockAdapter):
    module_type = 'mmpretrain.models.backbones.mobilenet_v2.InvertedResidual'
    identity_when = 'use_res_connect'

    def branch_conv_path(self, module: nn.Module) -> str:
        return f'conv.{len(module.conv) - 1}'


@ADAPTERS.register_module()
class EdgeResidualAdapter(ResidualBlockAdapter):
    module_type = 'mmpretrain.models.backbones.efficientnet.EdgeResidual'
    identity_when = 'with_residual'
    branch_conv = 'conv2'
