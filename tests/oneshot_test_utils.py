# Copyright (c) mmdms contributors. All rights reserved.
"""A tiny one-shot supernet: configs/dms/fmnist/mbv2_evolution.py with a small MobileNetV2-style
architecture (so that the tests of the one-shot + evolution baseline take seconds)."""
import os.path as osp

from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
EVOLUTION_CONFIG = osp.join(REPO, 'configs', 'dms', 'fmnist', 'mbv2_evolution.py')


def tiny_evolution_config(**model) -> Config:
    """The mbv2 evolution config with 8-16 channels, 2 stages, a 32-channel last conv."""
    cfg = Config.fromfile(EVOLUTION_CONFIG)
    backbone = cfg.model.architecture.backbone
    backbone.arch_settings = [[1, 8, 1, 1], [2, 16, 3, 2]]
    backbone.out_indices = (2, )
    backbone.last_channels = 32
    cfg.model.architecture.head.in_channels = 32
    cfg.model.update(model)
    return cfg
