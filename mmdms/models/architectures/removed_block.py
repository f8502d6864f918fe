# Copyright (c) mmdms contributors. All rights reserved.
"""What a residual block removed by the depth search becomes in the exported subnet."""
from torch import Tensor, nn
from mmrazor.registry import MODELS


@MODELS.register_module()
class RemovedBlock(nn.Identity):
    """An identity in place of a removed identity-residual block ``g(x) = x + f(x)``.

    Returns its first input unchanged, whatever else the parent passes to the block (the depth
    mask of the search computes ``x + m (g(x) - x)``, i.e. ``x`` when ``m = 0``).
    """

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        return x
