# Copyright (c) mmdms contributors. All rights reserved.
"""A width read flattened with the spatial positions (VGG's classifier after ``flatten``) is
searched: the classifier reads its mask expanded (each channel as its 16 positions), and the
model exports exactly (it crashed with ``'DMSMutableChannel' object has no attribute
'expand_mutable_channel'``, then that width stayed fixed)."""
import torch.nn as nn
from mmengine.model import BaseModel

from mmdms.apis import hard_mask_difference
from mmdms.models import DMS, DMSSubnet
from mmdms.structures import subnet_from_algorithm
from mmdms.utils import count_macs, count_params
from dms_test_utils import randomize_structure

SHAPE = (1, 3, 16, 16)


class TinyVGG(BaseModel):
    """VGG's layout: convs, a max pool, ``flatten`` and a fully connected classifier."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4))
        self.classifier = nn.Sequential(nn.Linear(6 * 4 * 4, 12), nn.ReLU(), nn.Linear(12, 4))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return self.classifier(self.features(inputs).flatten(1))


def test_flattened_width_is_searched_and_exports_exactly():
    search = DMS(TinyVGG(), mutator=dict(type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=SHAPE, tracer_type='FxTracer')))
    searched = {n for group in search.space.widths.values() for n in group.layers}
    assert searched >= {'features.0', 'features.3', 'classifier.0', 'classifier.2'}
    assert [m.num_channels for m in search.space.width_mutables()] == [8, 6, 12]
    flattened = search.space.width_mutables()[1]
    assert search.space.layer_masks('classifier.0').in_mask(True).numel() == 96

    randomize_structure(search.eval(), seed=1)
    subnet = subnet_from_algorithm(search)
    kept = flattened.activated_channels
    assert kept < 6
    architecture = TinyVGG()
    architecture.load_state_dict(search.architecture.state_dict())
    static = DMSSubnet(architecture, subnet)
    assert static.architecture.features[3].out_channels == kept
    assert static.architecture.classifier[0].in_features == 16 * kept
    assert hard_mask_difference(search, static, (2, ) + SHAPE[1:]) <= 1e-5
    assert count_macs(static, SHAPE) == subnet['macs']
    assert count_params(static) == subnet['params']
