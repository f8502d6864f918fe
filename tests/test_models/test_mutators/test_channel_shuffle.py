# Copyright (c) mmdms contributors. All rights reserved.
"""A width a channel shuffle permutes across the groups of its grouped convs (ShuffleNet-v1)
stays fixed, with the reason, and the model exports exactly: its widths were searched as if the
shuffle passed channel k to channel k, and the static model's outputs were 3.7e-2 off."""
import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from torch.fx import symbolic_trace

from mmdms.apis import hard_mask_difference
from mmdms.models import DMS, DMSSubnet
from mmdms.models.mutators.channel_shuffle import is_channel_shuffle
from mmdms.structures import subnet_from_algorithm
from mmdms.utils import count_macs, count_params
from dms_test_utils import randomize_structure

SHAPE = (1, 3, 16, 16)


def inlined_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.size(0), x.size(1), x.size(2), x.size(3)
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, -1, h, w)


class TinyShuffleUnit(BaseModel):
    """grouped 1x1 -> shuffle -> depthwise 3x3 -> grouped 1x1, plus the input."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.compress = nn.Sequential(nn.Conv2d(12, 6, 1, groups=3), nn.BatchNorm2d(6))
        self.dw = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.BatchNorm2d(6))
        self.expand = nn.Sequential(nn.Conv2d(6, 12, 1, groups=3), nn.BatchNorm2d(12))
        self.head = nn.Linear(12, 4)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.relu(self.stem(inputs))
        y = inlined_shuffle(torch.relu(self.compress(x)), 3)
        x = torch.relu(x + self.expand(self.dw(y)))
        return self.head(x.mean(dim=(2, 3)))


class HeadSplit(nn.Module):
    """An attention's head split: a view and ``transpose(1, 2)``, then a product, no view."""

    def forward(self, x):
        b, n, c = x.size(0), x.size(1), x.size(2)
        q = x.view(b, n, 2, c // 2).transpose(1, 2)
        return q @ q.transpose(-2, -1)


def transposes(module):
    return [n for n in symbolic_trace(module).graph.nodes if n.target == 'transpose']


def test_shuffle_found_and_head_split_not():
    class Shuffle(nn.Module):
        def forward(self, x):
            return inlined_shuffle(x, 3)

    traced = symbolic_trace(Shuffle())  # its shape reads are proxies, as in MMRazor's trace
    assert [is_channel_shuffle(n) for n in traced.graph.nodes if n.target == 'transpose'] == \
        [True]
    assert not any(is_channel_shuffle(n) for n in transposes(HeadSplit()))


@pytest.mark.parametrize('seed', [0, 1])
def test_shuffled_width_is_fixed_and_the_rest_exports_exactly(seed):
    search = DMS(TinyShuffleUnit(), mutator=dict(type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=SHAPE, tracer_type='FxTracer')))
    reasons = search.mutator.unsearched_reasons
    assert 'channel shuffle' in reasons['dw.0']
    searched = {n for group in search.space.widths.values() for n in group.layers}
    assert 'stem' in searched and 'dw.0' not in searched
    randomize_structure(search.eval(), seed=seed)
    subnet = subnet_from_algorithm(search)
    architecture = TinyShuffleUnit()
    architecture.load_state_dict(search.architecture.state_dict())
    static = DMSSubnet(architecture, subnet)
    assert static.architecture.dw[0].out_channels == 6
    assert hard_mask_difference(search, static, (2, ) + SHAPE[1:]) <= 1e-5
    assert count_macs(static, SHAPE) == subnet['macs']
    assert count_params(static) == subnet['params']


def test_shufflenet_v1_exports_exactly():
    pytest.importorskip('mmpretrain')
    from mmpretrain.models import ImageClassifier
    model = ImageClassifier(
        backbone=dict(type='ShuffleNetV1', groups=3, widen_factor=0.5),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=480))
    search = DMS(model, mutator=dict(type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=(1, 3, 32, 32), tracer_type='FxTracer')))
    assert len(search.space.widths) > 0
    assert all('channel shuffle' in search.mutator.unsearched_reasons[n]
               for n in search.space.unsearched_layers)
    randomize_structure(search.eval(), seed=0)
    subnet = subnet_from_algorithm(search)
    architecture = ImageClassifier(
        backbone=dict(type='ShuffleNetV1', groups=3, widen_factor=0.5),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=480))
    architecture.load_state_dict(search.architecture.state_dict())
    static = DMSSubnet(architecture, subnet)
    assert hard_mask_difference(search, static, (2, 3, 32, 32)) <= 1e-4
    assert count_macs(static, (1, 3, 32, 32)) == subnet['macs']


def test_mobilevit_patch_unfolding_is_not_a_shuffle():
    """MobileViT unfolds its feature map into patches with ``reshape(B * C * n_h, p_h, n_w,
    p_w).transpose(1, 2)``: a view, a swap of axes 1 and 2 and a view, like an inlined shuffle,
    but its channels left axis 1 first and keep their order, so its transformer streams are
    searched (80% of the weights were before) and export exactly."""
    pytest.importorskip('mmpretrain')
    from mmpretrain.registry import MODELS

    def classifier():
        return MODELS.build(dict(
            type='ImageClassifier', backbone=dict(type='MobileViT', arch='xx_small'),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=10, in_channels=320)))

    # 64 px: every stage's map is a whole number of 2x2 patches (at 32 px the last one is
    # interpolated from 1x1 to 2x2 and back, and the estimator counts the interpolation back at
    # the full width, 168 MACs over the static model's count)
    shape = (1, 3, 64, 64)
    search = DMS(classifier(), mutator=dict(type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=shape, tracer_type='FxTracer')))
    assert search.space.unsearched_layers == []
    searched = {n for group in search.space.widths.values() for n in group.layers}
    assert 'backbone.layers.2.1.global_rep.0.attn.qkv' in searched
    randomize_structure(search.eval(), seed=0)
    subnet = subnet_from_algorithm(search)
    architecture = classifier()
    architecture.load_state_dict(search.architecture.state_dict())
    static = DMSSubnet(architecture, subnet)
    assert hard_mask_difference(search, static, (2, ) + shape[1:]) <= 1e-4
    assert count_macs(static, shape) == subnet['macs']
