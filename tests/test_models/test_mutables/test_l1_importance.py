# Copyright (c) mmdms contributors. All rights reserved.
"""importance='l1' in a real search: each width's importance is the L1 norm of the weight rows
producing its channels; where nothing produces an element (depths, ViT widths), one error."""
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.runner import Runner
from mmrazor.registry import MODELS

import mmdms  # noqa: F401
from dms_test_utils import build_search_model, digits_search_config
from mmdms.models import sync_importance
from mmdms.models.mutables import L1Importance

REPO = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
DIGITS_SEARCH = osp.join(REPO, 'configs', 'dms', 'demo', 'digits_search.py')


def producer_norms(architecture, unit, step=1):
    """Per element: sum of |W| over the output rows of the unit's producing conv/linear layers,
    computed from the layers' weights directly."""
    layers = dict(architecture.named_modules())
    total = torch.zeros(unit.num_channels)
    for channel in unit.output_related:  # also records of functions (e.g. the residual add)
        layer = layers.get(channel.name)
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            weight = layer.weight.detach()
            for c in range(channel.start, channel.end):
                total[c - channel.start] += weight[c].abs().sum()
    return torch.stack([chunk.sum() for chunk in total.split(step)])


def producers(unit):
    return {c.name for c in unit.output_related if isinstance(c.module, (nn.Conv2d, nn.Linear))}


def assert_orders_by(mutable, norms):
    """Eq. 2's ranks and the kept channels follow the norms."""
    ranks = mutable.normalized_importance()
    for i in range(len(norms)):
        for j in range(len(norms)):
            if norms[i] > norms[j]:
                assert ranks[i] > ranks[j]
    kept = mutable.num_kept
    assert set(mutable.kept_elements()) == set(norms.topk(kept).indices.tolist())


def test_l1_importance_in_a_runner_search(tmp_path):
    cfg = digits_search_config(str(tmp_path), epochs=1, width_only=0, samples=32,
                               ResourceLossHook=dict(save_structure=False))
    cfg.model.mutator.channel_unit_cfg.default_args = dict(importance='l1')
    runner = Runner.from_cfg(cfg)
    model = runner.model
    units = model.mutator.mutable_units
    # what the digits ResNet's layers produce (the stem and every layer1 block's conv2 write the
    # layer1 residual stream; a block's conv1 alone its inner width)
    stem = next(u for u in units if 'backbone.conv1' in producers(u))
    assert producers(stem) == {'backbone.conv1'} | {f'backbone.layer1.{i}.conv2' for i in range(3)}
    inner = next(u for u in units if 'backbone.layer2.1.conv1' in producers(u))
    assert producers(inner) == {'backbone.layer2.1.conv1'}

    runner.train()
    assert runner.iter == 2
    assert units and all(isinstance(u.mutable_channel.importance_metric, L1Importance)
                         for u in units)
    for unit in units:
        mutable = unit.mutable_channel
        expected = producer_norms(model.architecture, unit)
        assert (expected > 0).all(), unit.name
        # read after the last optimiser step: the norms of the trained weights, not the initial
        assert torch.allclose(mutable.importance, expected, rtol=1e-5), unit.name
        assert_orders_by(mutable, expected)
    # the depths keep their (Taylor) importance
    assert all(m.importance.abs().sum() > 0 for m in model.mutator.depth_mutables)


def test_l1_importance_sums_a_step_of_channels():
    mutator = Config.fromfile(DIGITS_SEARCH).model.mutator
    mutator.channel_unit_cfg.default_args = dict(importance='l1', step=3)
    model = build_search_model(DIGITS_SEARCH, mutator=mutator)
    assert sync_importance(model.dms_mutables()) == len(model.mutator.mutable_units)
    for unit in model.mutator.mutable_units:
        expected = producer_norms(model.architecture, unit, step=3)
        assert unit.mutable_channel.importance.shape == expected.shape
        assert torch.allclose(unit.mutable_channel.importance, expected, rtol=1e-5), unit.name


class DepthwiseModel(nn.Module):

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8),
                                nn.ReLU())
        self.pw = nn.Conv2d(8, 6, 1)
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        return self.head(self.pw(self.dw(self.stem(x))).mean(dim=(2, 3)))


def test_depthwise_filters_count_and_batchnorm_does_not():
    torch.manual_seed(0)
    model = DepthwiseModel()
    with torch.no_grad():
        for bn in (model.stem[1], model.dw[1]):
            bn.weight.uniform_(1, 2)
    mutator = MODELS.build(dict(
        _scope_='mmrazor', type='DMSMutator',
        channel_unit_cfg=dict(type='DMSChannelUnit', default_args=dict(importance='l1')),
        parse_cfg=dict(type='ChannelAnalyzer', demo_input=(1, 3, 8, 8),
                       tracer_type='FxTracer')))
    mutator.prepare_from_supernet(model)
    sync_importance(mutator.dms_mutables())
    by_width = {m.num_channels: m for m in mutator.width_mutables}
    assert sorted(by_width) == [6, 8]

    def rows(conv):
        return conv.weight.detach().abs().flatten(1).sum(dim=1)

    assert torch.allclose(by_width[8].importance, rows(model.stem[0]) + rows(model.dw[0]))
    assert torch.allclose(by_width[6].importance, rows(model.pw))


def test_l1_for_depths_is_one_error_naming_them():
    mutator = Config.fromfile(DIGITS_SEARCH).model.mutator
    mutator.depth_args = dict(importance='l1')
    with pytest.raises(ValueError) as error:
        build_search_model(DIGITS_SEARCH, mutator=mutator)
    message = str(error.value)
    assert '4 mutable(s) have none' in message
    for stage in ('layer1.0-2', 'layer2.1-3', 'layer3.1-5', 'layer4.1-2'):
        assert f'depth backbone.{stage}' in message
    assert 'width' not in message.split('have none:')[1].split('(')[0]
    assert "importance='taylor'" in message


def test_l1_for_vit_widths_is_one_error_naming_them():
    model = MODELS.build(dict(
        _scope_='mmpretrain', type='ImageClassifier',
        backbone=dict(type='VisionTransformer', img_size=16, patch_size=4,
                      arch=dict(embed_dims=24, num_layers=1, num_heads=3,
                                feedforward_channels=40)),
        neck=None,
        head=dict(type='VisionTransformerClsHead', num_classes=5, in_channels=24)))
    mutator = MODELS.build(dict(
        _scope_='mmrazor', type='DMSMutator', search_depth=False,
        channel_unit_cfg=dict(type='DMSChannelUnit', default_args=dict(importance='l1')),
        parse_cfg=dict(type='ChannelAnalyzer', demo_input=(1, 3, 16, 16),
                       tracer_type='FxTracer')))
    with pytest.raises(ValueError, match=r"mutable\(s\) have none: width backbone\.") as error:
        mutator.prepare_from_supernet(model)
    assert 'heads' in str(error.value) and "importance='taylor'" in str(error.value)
