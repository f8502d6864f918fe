# Copyright (c) mmdms contributors. All rights reserved.
"""MobileNetV2 with a depth multiplier, for the paper's enlarged MobileNetV2 supernet."""
from mmpretrain.models.backbones import MobileNetV2
from mmpretrain.registry import MODELS


@MODELS.register_module()
class ScalableMobileNetV2(MobileNetV2):
    """mmpretrain's MobileNetV2 whose number of blocks per stage is multiplied by ``deepen_factor``.

    The paper's MobileNetV2 supernet has 1.5x the channels (``widen_factor=1.5``) and twice the
    blocks of each stage (``deepen_factor=2``) (App. A.4.1). Weights, names and everything else
    are mmpretrain's.

    Args:
        deepen_factor (float): blocks per stage are ``max(1, round(n * deepen_factor))``.
        **kwargs: arguments of :class:`mmpretrain.models.backbones.MobileNetV2`.
    """

    def __init__(self, deepen_factor: float = 1.0, **kwargs) -> None:
        if deepen_factor <= 0:
            raise ValueError(f'deepen_factor must be positive, got {deepen_factor}')
        self.arch_settings = [[t, c, max(1, round(n * deepen_factor)), s]
                              for t, c, n, s in MobileNetV2.arch_settings]
        super().__init__(**kwargs)
