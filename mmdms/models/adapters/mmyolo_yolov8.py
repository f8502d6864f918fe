# Copyright (c) mmdms contributors. All rights reserved.
"""mmyolo's YOLOv8 family: ``CSPLayerWithTwoConv`` and its ``DarknetBottleneck`` blocks.

* ``CSPLayerWithTwoConv.forward`` does ``list(x_main.split(...))``; torch.fx cannot iterate a
  Proxy with ``list`` (it can unpack one into a fixed number of names, which the traceable
  forward below does). DMS searches main_conv's two output halves as separate widths (the
  first goes straight to final_conv, the second runs through the bottleneck chain), so an
  exported layer splits at the kept count of each half
  (:class:`~mmdms.models.architectures.PrunedCSPLayerWithTwoConv`).
* ``DarknetBottleneck`` (mmdet's, which mmyolo's subclasses) with ``add_identity`` is an
  identity-residual block. A removed one becomes a ``RemovedBlock`` whose input is still
  concatenated into final_conv, as the masked ``x + 0 * f(x)`` was.

Modules checked and needing no adapter: ``SPPFBottleneck`` (max-poolings and a concat),
``YOLOv8HeadModule`` (its reshape reads ``reg_max``, the fixed width of the last reg conv).
"""
from typing import Dict

import torch
import torch.nn as nn

from mmdms.models.architectures import PrunedCSPLayerWithTwoConv
from mmdms.models.mutators.trace_forwards import output_section_widths
from mmdms.registry import ADAPTERS
from mmdms.structures.subnet_spec import SubnetError, kept_section_widths
from .base import FamilyAdapter, ResidualBlockAdapter


def csp_layer_with_two_conv_forward(self, x: torch.Tensor) -> torch.Tensor:
    """``CSPLayerWithTwoConv.forward`` with the split unpacked into two names.

    main_conv -> halves ``(a, b)`` of its output -> ``b`` runs through the block chain -> final_conv
    on ``cat([a, b, block_1(b), block_2(block_1(b)), ...])``.
    """
    x_main = self.main_conv(x)
    first, second = x_main.split(
        output_section_widths(self.main_conv.conv, (self.mid_channels, self.mid_channels)), 1)
    outs = [first, second]
    for block in self.blocks:
        outs.append(block(outs[-1]))
    return self.final_conv(torch.cat(outs, 1))


@ADAPTERS.register_module()
class CSPLayerWithTwoConvAdapter(FamilyAdapter):
    module_type = 'mmyolo.models.layers.yolo_bricks.CSPLayerWithTwoConv'
    match_subclasses = False  # a subclass may have changed the forward

    def trace_forward(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return csp_layer_with_two_conv_forward(module, x)

    def static_rule(self, module: nn.Module, name: str, subnet: Dict) -> None:
        """Split main_conv's output where the subnet's kept channels of each half end."""
        if isinstance(module, PrunedCSPLayerWithTwoConv):
            return
        conv_name = f'{name}.main_conv.conv'
        layer = subnet.get('layers', {}).get(conv_name)
        sections = (module.mid_channels, module.mid_channels)
        widths = kept_section_widths(layer['kept_out'] if layer else None, sections)
        if widths == sections:
            return
        if min(widths) < 1:
            raise SubnetError(f"'{conv_name}' keeps no channel of one output half {widths}")
        PrunedCSPLayerWithTwoConv.convert_from(module, widths)


@ADAPTERS.register_module()
class DarknetBottleneckAdapter(ResidualBlockAdapter):
    module_type = 'mmdet.models.layers.csp_layer.DarknetBottleneck'
    identity_when = 'add_identity'
