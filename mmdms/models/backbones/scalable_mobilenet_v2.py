# Copyright (c) mmdms contributors. All rights reserved.
"""MobileNetV2 with a depth multiplier, for the paper's enlarged MobileNetV2 supernet, and with
its stem, stages and last conv set by arguments, for small grey images (Fashion-MNIST)."""
from typing import Optional, Sequence

from mmcv.cnn import ConvModule
from mmpretrain.models.backbones import MobileNetV2
from mmpretrain.registry import MODELS


@MODELS.register_module()
class ScalableMobileNetV2(MobileNetV2):
    """mmpretrain's MobileNetV2 whose number of blocks per stage is multiplied by ``deepen_factor``.

    The paper's MobileNetV2 supernet has 1.5x the channels (``widen_factor=1.5``) and twice the
    blocks of each stage (``deepen_factor=2``) (App. A.4.1). Weights, names and everything else
    are mmpretrain's. The other arguments adapt it to small inputs (defaults: mmpretrain's
    ImageNet network): e.g. 28x28 grey images with ``in_channels=1``, ``stem_stride=1``, fewer
    stages and a narrower last conv.

    Args:
        deepen_factor (float): blocks per stage are ``max(1, round(n * deepen_factor))``.
        arch_settings (Sequence, optional): ``[expand_ratio, channels, blocks, stride]`` per
            stage (at most 7 stages); defaults to mmpretrain's ImageNet stages.
        in_channels (int): image channels. Defaults to 3.
        stem_stride (int): stride of the stem conv. Defaults to 2.
        last_channels (int, optional): output channels of the last 1x1 conv (``conv2``);
            defaults to mmpretrain's (1280, times ``widen_factor`` above 1). ``out_indices``
            of that conv is ``len(arch_settings)``.
        **kwargs: arguments of :class:`mmpretrain.models.backbones.MobileNetV2`.
    """

    def __init__(self,
                 deepen_factor: float = 1.0,
                 arch_settings: Optional[Sequence[Sequence[int]]] = None,
                 in_channels: int = 3,
                 stem_stride: int = 2,
                 last_channels: Optional[int] = None,
                 **kwargs) -> None:
        if deepen_factor <= 0:
            raise ValueError(f'deepen_factor must be positive, got {deepen_factor}')
        stages = MobileNetV2.arch_settings if arch_settings is None else arch_settings
        if not 1 <= len(stages) <= 7 or any(len(s) != 4 for s in stages):
            raise ValueError('arch_settings must hold 1 to 7 stages of [expand_ratio, '
                             f'channels, blocks, stride], got {arch_settings}')
        self.arch_settings = [[t, c, max(1, round(n * deepen_factor)), s]
                              for t, c, n, s in stages]
        super().__init__(**kwargs)
        if in_channels != 3 or stem_stride != 2:
            self.conv1 = ConvModule(in_channels, self.conv1.conv.out_channels, 3,
                                    stride=stem_stride, padding=1, conv_cfg=self.conv_cfg,
                                    norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        if last_channels is not None:
            self.out_channel = last_channels
            self.conv2 = ConvModule(self.in_channels, last_channels, 1, conv_cfg=self.conv_cfg,
                                    norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
