# Copyright (c) mmdms contributors. All rights reserved.
"""Static rules (:func:`~mmdms.structures.register_static_rule`) for the OpenMMLab modules of
the model families whose ``forward`` reads a channel count.

* mmyolo's ``CSPLayerWithTwoConv`` splits main_conv's output ``(mid_channels, mid_channels)``;
  DMS searches the two halves as separate widths, so it becomes a
  :class:`~mmdms.models.architectures.PrunedCSPLayerWithTwoConv` splitting at the kept counts.

Modules checked and needing no rule: mmyolo's ``SPPFBottleneck`` (max-poolings and a concat),
``DarknetBottleneck`` (a removed one becomes a ``RemovedBlock`` whose input is still concatenated
into final_conv, as the masked ``x + 0 * f(x)`` was), ``YOLOv8HeadModule`` (its reshape reads
``reg_max``, the fixed width of the last reg conv).
"""
from typing import Dict, Optional, Sequence, Tuple

import torch.nn as nn

from mmdms.models.architectures import PrunedCSPLayerWithTwoConv
from .static_prune import register_static_rule
from .subnet_spec import SubnetError


def kept_section_widths(kept: Optional[Sequence[int]],
                        sections: Sequence[int]) -> Tuple[int, ...]:
    """How many of the ``kept`` channel indices (``None``: all) lie in each of the consecutive
    ``sections``."""
    if kept is None:
        return tuple(sections)
    widths, start = [], 0
    for size in sections:
        widths.append(sum(start <= i < start + size for i in kept))
        start += size
    return tuple(widths)


if PrunedCSPLayerWithTwoConv is not None:
    from mmyolo.models.layers.yolo_bricks import CSPLayerWithTwoConv

    @register_static_rule(CSPLayerWithTwoConv)
    def csp_layer_with_two_conv(module: nn.Module, name: str, subnet: Dict) -> None:
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
