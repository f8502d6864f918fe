# Copyright (c) mmdms contributors. All rights reserved.
"""configs/dms/*.py build the whole search model from the configs shipped in mmpretrain / mmyolo."""
import copy
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

from mmdms.models import DMS
from dms_test_utils import assert_hard_ones_reproduce

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SIZE = 64

# config -> (width groups, depth stages, attention mutables, searchable blocks)
CONFIGS = {
    # ResNet-50 stages of 3, 4, 6, 3 blocks; the first of each downsamples
    'resnet50': (37, 4, 0, 12),
    # EfficientNet-B4: 32 blocks in 7 stages (B0's 1,2,2,3,3,4,1 x 1.8), 25 with a shortcut
    'effnet_b0': (71, 7, 0, 25),
    # MobileNetV2 1.5x wide, 2x deep: 34 blocks in 7 stages, 27 with a shortcut
    'mobilenet_v2': (41, 7, 0, 27),
    # DeiT-Small with 16 layers: embedding + 16 x (heads, qk dims, v dims, MLP hidden)
    'deit_tiny': (65, 1, 48, 16),
    # YOLOv8 deepen 0.5 / widen 0.5: backbone CSP layers of 2, 3, 3, 2 shortcut bottlenecks;
    # the neck's 4 CSP layers have 2 bottlenecks each, without shortcut (not depth-searched)
    'yolov8_n': (71, 4, 0, 10),
}
# custom_hooks: the training config's own hooks, then the importance hook
HOOKS = {'yolov8_n': ['EMAHook', 'mmdet.PipelineSwitchHook', 'DMSImportanceHook']}


def load(name):
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'dms', f'{name}.py'))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.mutator.parse_cfg.demo_input = (1, 3, SIZE, SIZE)
    # the Runner hands the config's top-level data_preprocessor to the model
    model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    return cfg, model_cfg


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_config_builds_the_search_model(name):
    cfg, model_cfg = load(name)
    assert [h['type'] for h in cfg.custom_hooks] == HOOKS.get(name, ['DMSImportanceHook'])
    assert cfg.custom_hooks[-1] == dict(type='DMSImportanceHook')
    with DefaultScope.overwrite_default_scope(cfg.default_scope):  # as the Runner does
        check_search_model(name, model_cfg)


def check_search_model(name, model_cfg):
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    assert isinstance(model, DMS)
    widths, depths, attention, blocks = CONFIGS[name]
    mutator = model.mutator
    assert len(mutator.width_mutables) == widths
    assert len(mutator.depth_mutables) == depths
    assert sum(m.num_blocks for m in mutator.depth_mutables) == blocks
    assert sum(k.rpartition('__')[2] in ('heads', 'qk_dims', 'v_dims')
               for k in mutator.structured_mutables) == attention
    assert mutator.weight_coverage >= 0.9

    # the masked supernet at hard masks of 1 is the unmodified architecture
    torch.manual_seed(0)
    reference = MODELS.build(dict(model_cfg.architecture,
                                  data_preprocessor=model_cfg.data_preprocessor)).eval()
    model.architecture.load_state_dict(reference.state_dict())
    model.eval()
    assert_hard_ones_reproduce(TensorOutputs(model), TensorOutputs(reference),
                               model.dms_mutables(), (2, 3, SIZE, SIZE))


class TensorOutputs(nn.Module):
    """Every output of a model's ``tensor`` mode (a detector's per-level lists) in one tensor."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return flatten(self.model(x, mode='tensor'))


def flatten(out):
    if isinstance(out, torch.Tensor):
        return out.flatten(1)
    return torch.cat([flatten(o) for o in out], dim=1)
