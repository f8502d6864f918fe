# Copyright (c) mmdms contributors. All rights reserved.
"""mmpretrain's ResNet family: its blocks without a downsample are identity-residual blocks."""
from mmdms.registry import ADAPTERS
from .base import ResidualBlockAdapter


@ADAPTERS.register_module()
class ResNetBasicBlockAdapter(ResidualBlockAdapter):
    module_type = 'mmpretrain.models.backbones.resnet.BasicBlock'
    identity_when = 'downsample is None'


@ADAPTERS.register_module()
class ResNetBottleneckAdapter(ResidualBlockAdapter):
    module_type = 'mmpretrain.models.backbones.resnet.Bottleneck'
    identity_when = 'downsample is None'
