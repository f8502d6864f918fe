# Copyright (c) mmdms contributors. All rights reserved.
"""configs/dms/*.py build the whole search model from the configs shipped in mmpretrain / mmyolo."""
import copy
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmpretrain.structures import DataSample
from mmengine.registry import MODELS, DefaultScope

from mmdms.models import DMS
from mmdms.models.utils import sync_importance
from dms_test_utils import assert_hard_ones_reproduce

RESNET152_WIDTHS = 1 + 4 + 2 * (3 + 8 + 36 + 3)  # stem; a residual group per stage; 2 per block
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SIZE = 64

# config -> (width groups, depth stages, attention mutables, searchable blocks)
CONFIGS = {
    # ResNet-152 supernet: stages of 3, 8, 36, 3 blocks; the first of each downsamples
    'resnet50': (RESNET152_WIDTHS, 4, 0, 46),
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
# custom_hooks: the training config's own hooks, then the DMS hooks
HOOKS = {'yolov8_n': ['EMAHook', 'mmdet.PipelineSwitchHook']}
DMS_HOOKS = ['DMSImportanceHook', 'ResourceLossHook', 'DMSNaNGuardHook', 'RandomStateHook']


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
    assert [h['type'] for h in cfg.custom_hooks] == \
        HOOKS.get(name, []) + DMS_HOOKS
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


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_config_searches_under_its_resource_loss(name):
    """A few search steps with the config's optimiser: r_c falls while loss_resource > 0."""
    cfg, model_cfg = load(name)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        torch.manual_seed(0)
        model = MODELS.build(model_cfg)
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    ratios = {id(m.dms_ratio) for m in model.dms_mutables()}
    structure_groups = [g for g in optim_wrapper.optimizer.param_groups
                        if any(id(p) in ratios for p in g['params'])]
    # mmengine's paramwise_cfg makes one group per parameter: every ratio's group holds ratios
    # only, at lr_structure, without weight decay
    assert sum(len(g['params']) for g in structure_groups) == len(ratios)
    for group in structure_groups:
        assert all(id(p) in ratios for p in group['params'])
        assert group['lr'] == pytest.approx(cfg.lr_structure)
        assert group['weight_decay'] == 0
    hook = next(h for h in cfg.custom_hooks if h['type'] == 'ResourceLossHook')
    assert hook['lambda_resource'] == 1.0 and hook['width_only_epochs'] >= 1
    assert cfg.train_cfg.max_epochs == cfg.search_epochs

    model.set_resource_constraint('macs', 0.5 * model.supernet_resource('macs'))
    model.train()
    data = search_batch(name)
    costs = [model.estimator.estimate('macs').item()]
    positive = 0
    for _ in range(3):
        log = model.train_step(data, optim_wrapper)
        sync_importance(model.dms_mutables())  # what DMSImportanceHook does after each step
        # Eq. 7: positive exactly while the (hard-valued) r_c is above the target
        assert (log['loss_resource'].item() > 0) == (log['r_c'] > log['r_t']).item(), log
        positive += log['loss_resource'].item() > 0
        costs.append(model.estimator.estimate('macs').item())
    # the task loss may widen some ratios in one step; over the steps the cost falls
    assert costs[-1] < costs[0], costs
    assert positive >= 1


def search_batch(name):
    """Two synthetic images with labels (classifiers) or boxes (mmyolo's collated format)."""
    images = torch.randint(0, 256, (2, 3, SIZE, SIZE), dtype=torch.uint8)
    if name == 'yolov8_n':  # rows: image index, class, x1, y1, x2, y2
        boxes = torch.tensor([[0, 1, 8., 8., 40., 48.], [1, 2, 4., 10., 30., 60.]])
        metas = [dict(batch_input_shape=(SIZE, SIZE), img_shape=(SIZE, SIZE))] * 2
        return dict(inputs=images, data_samples=dict(bboxes_labels=boxes, img_metas=metas))
    return dict(inputs=list(images), data_samples=[DataSample().set_gt_label(i) for i in range(2)])
