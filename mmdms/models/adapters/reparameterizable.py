# Copyright (c) mmdms contributors. All rights reserved.
"""Re-parameterisable multi-branch blocks: mmpretrain's ``RepVGGBlock`` and ``MobileOneBlock``,
mmyolo's ``RepVGGBlock`` (PPYOLOE+, YOLOv6).

DMS searches and exports them in their training form: parallel conv + BN branches (3x3, 1x1,
MobileOne's several 3x3s) and an identity BatchNorm, all reading and writing the same widths,
which the channel tracer finds like any other conv. Their deploy conversion
(``switch_to_deploy``, one fused conv) builds that conv from the block's own ``in_channels``,
``out_channels`` and ``groups`` (and the identity branch's kernel from ``in_channels``), which
the export's slicing of the branches does not change: on a pruned block it failed with a shape
error. The static rule sets them from the block's sliced conv, so the pruned model converts to
its deploy form as the supernet does, with the same outputs.
"""
from typing import Dict, Sequence

import torch.nn as nn

from mmdms.registry import ADAPTERS
from .base import FamilyAdapter


class _ReparameterizableBlockAdapter(FamilyAdapter):
    """A block whose deploy conversion reads its widths from its own attributes.

    Attributes:
        conv_paths (tuple): the block's conv whose widths the others share, first found (the
            training form's first branch; the deploy form's fused conv).
    """

    conv_paths: Sequence[str] = ()

    def static_rule(self, module: nn.Module, name: str, subnet: Dict) -> None:
        for path in self.conv_paths:
            try:
                conv = module.get_submodule(path)
            except AttributeError:
                continue
            module.in_channels, module.out_channels = conv.in_channels, conv.out_channels
            module.groups = conv.groups
            return


@ADAPTERS.register_module()
class RepVGGBlockAdapter(_ReparameterizableBlockAdapter):
    """mmpretrain's ``RepVGGBlock`` (RepVGG)."""

    module_type = 'mmpretrain.models.backbones.repvgg.RepVGGBlock'
    conv_paths = ('branch_3x3.conv', 'branch_reparam')


@ADAPTERS.register_module()
class MobileOneBlockAdapter(_ReparameterizableBlockAdapter):
    """mmpretrain's ``MobileOneBlock`` (MobileOne)."""

    module_type = 'mmpretrain.models.backbones.mobileone.MobileOneBlock'
    conv_paths = ('branch_conv_list.0.conv', 'branch_scale.conv', 'branch_reparam')


@ADAPTERS.register_module()
class YOLORepVGGBlockAdapter(_ReparameterizableBlockAdapter):
    """mmyolo's ``RepVGGBlock`` (PPYOLOE+, YOLOv6)."""

    module_type = 'mmyolo.models.layers.yolo_bricks.RepVGGBlock'
    conv_paths = ('rbr_dense.conv', 'rbr_reparam')
