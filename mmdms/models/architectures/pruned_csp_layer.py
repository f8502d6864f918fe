# Copyright (c) mmdms contributors. All rights reserved.
"""The static ``CSPLayerWithTwoConv`` of an exported YOLOv8 subnet: main_conv's two output
halves keep different numbers of channels."""
from typing import Optional, Sequence, Tuple

import torch
from mmrazor.registry import MODELS

try:
    from mmyolo.models.layers.yolo_bricks import CSPLayerWithTwoConv
except ImportError:  # mmyolo is not installed: no YOLOv8 subnet to build
    CSPLayerWithTwoConv = None

if CSPLayerWithTwoConv is not None:

    @MODELS.register_module()
    class PrunedCSPLayerWithTwoConv(CSPLayerWithTwoConv):
        """mmyolo's ``CSPLayerWithTwoConv`` whose main_conv output splits into halves of
        ``split_sizes`` channels (mmyolo's forward splits ``(mid_channels, mid_channels)``).

        DMS searches the two halves as separate widths (the first goes straight to final_conv,
        the second runs through the bottleneck chain), so a pruned layer keeps different counts
        of each. ``split_sizes`` is a plain attribute: the subnet is rebuilt from ``subnet.json``
        (:func:`~mmdms.structures.prune_to_subnet` converts the layer), its state dict keys
        are the supernet's.

        Args:
            split_sizes (Sequence[int], optional): channels of main_conv's first and second
                output half; defaults to ``(mid_channels, mid_channels)``.
            **kwargs: ``CSPLayerWithTwoConv``'s arguments.
        """

        def __init__(self, *args, split_sizes: Optional[Sequence[int]] = None,
                     **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.split_sizes: Tuple[int, int] = tuple(split_sizes) if split_sizes else \
                (self.mid_channels, self.mid_channels)
            self._check()

        @classmethod
        def convert_from(cls, layer: CSPLayerWithTwoConv,
                         split_sizes: Sequence[int]) -> 'PrunedCSPLayerWithTwoConv':
            """Turn ``layer`` (whose convs are already sliced) into the pruned layer, in place:
            same submodules, same state-dict keys."""
            layer.__class__ = cls
            layer.split_sizes = tuple(int(s) for s in split_sizes)
            layer._check()
            return layer

        def _check(self) -> None:
            widths = self.split_sizes
            out = self.main_conv.conv.out_channels
            if len(widths) != 2 or min(widths) < 1 or sum(widths) != out:
                raise ValueError(f'split_sizes {widths} do not split the {out} output channels '
                                 'of main_conv into two non-empty halves')

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x_main = list(self.main_conv(x).split(self.split_sizes, 1))
            x_main.extend(block(x_main[-1]) for block in self.blocks)
            return self.final_conv(torch.cat(x_main, 1))

        def extra_repr(self) -> str:
            return f'split_sizes={self.split_sizes}'

else:
    PrunedCSPLayerWithTwoConv = None
