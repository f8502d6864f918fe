# Copyright (c) mmdms contributors. All rights reserved.
"""Grouped convs (ResNeXt, RegNetX, ShuffleNet-v1): searched with the same channels in every
group and exported group by group, exactly (they were refused: "only plain and depthwise convs
can be pruned")."""
import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel

from mmdms.apis import hard_mask_difference
from mmdms.models import DMS, DMSSubnet
from mmdms.models.layer_rules import SubnetError, rule_for
from mmdms.structures import subnet_from_algorithm
from mmdms.utils import count_macs, count_params
from dms_test_utils import randomize_structure

SHAPE = (1, 3, 16, 16)


class TinyResNeXt(BaseModel):
    """A stem and a ResNeXt bottleneck (1x1, 3x3 with 4 groups, 1x1, plus the input), then a
    grouped conv that widens (12 -> 18 channels in 3 groups) and a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.reduce = nn.Sequential(nn.Conv2d(16, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.grouped = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=4), nn.BatchNorm2d(8),
                                     nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16))
        self.mid = nn.Sequential(nn.Conv2d(16, 12, 1), nn.ReLU())
        self.widen = nn.Conv2d(12, 18, 3, padding=1, groups=3)
        self.head = nn.Linear(18, 5)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = self.stem(inputs)
        x = torch.relu(x + self.expand(self.grouped(self.reduce(x))))
        x = torch.relu(self.widen(self.mid(x)))
        return self.head(x.mean(dim=(2, 3)))


@pytest.mark.parametrize('seed', [0, 1])
def test_grouped_convs_export_exactly(seed):
    search = DMS(TinyResNeXt(), mutator=dict(type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=SHAPE, tracer_type='FxTracer')))
    searched = {n for group in search.space.widths.values() for n in group.layers}
    assert {'grouped.0', 'widen'} <= searched
    randomize_structure(search.eval(), seed=seed)
    subnet = subnet_from_algorithm(search)
    architecture = TinyResNeXt()
    architecture.load_state_dict(search.architecture.state_dict())
    static = DMSSubnet(architecture, subnet)
    grouped, widen = static.architecture.grouped[0], static.architecture.widen
    assert (grouped.groups, widen.groups) == (4, 3)
    assert grouped.in_channels < 8 or widen.in_channels < 12  # something was pruned in them
    assert hard_mask_difference(search, static, (2, ) + SHAPE[1:]) <= 1e-5
    assert count_macs(static, SHAPE) == subnet['macs']
    assert count_params(static) == subnet['params']


def test_uneven_groups_are_refused_with_the_reason():
    conv = nn.Conv2d(8, 8, 3, groups=2)
    with pytest.raises(SubnetError, match=r'different numbers of input channels \(\[3, 1\]\)'):
        rule_for(conv).prune(conv, [0, 1, 2, 4], None, 'conv')
