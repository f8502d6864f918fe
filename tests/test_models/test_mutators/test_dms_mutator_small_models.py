# Copyright (c) mmdms contributors. All rights reserved.
"""DMSMutator on small hand-written models of the cases MMRazor's tracer tests cover."""
import copy

import pytest
import torch
import torch.nn as nn
from mmrazor.registry import MODELS

from mmdms.models import DMSConv2d, DMSMutator, UntraceableModuleError
from dms_test_utils import assert_hard_ones_reproduce


def build_mutator(**kwargs) -> DMSMutator:
    cfg = dict(_scope_='mmrazor', type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=(1, 3, 16, 16), tracer_type='FxTracer'))
    cfg.update(kwargs)
    return MODELS.build(cfg)


class ConcatModel(nn.Module):
    """Two branches concatenated: the consumer's input is split over two groups."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.c = nn.Conv2d(14, 10, 1)
        self.head = nn.Linear(10, 4)

    def forward(self, x):
        y = self.c(torch.cat([self.a(x), self.b(x)], dim=1))
        return self.head(y.mean(dim=(2, 3)))


class GroupedConvModel(nn.Module):
    """A depthwise and a grouped conv: their in and out channels are tied."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.grouped = nn.Conv2d(12, 12, 3, padding=1, groups=3)
        self.head = nn.Linear(12, 4)

    def forward(self, x):
        y = self.grouped(torch.relu(self.dw(torch.relu(self.stem(x)))))
        return self.head(y.mean(dim=(2, 3)))


class SharedLayerModel(nn.Module):
    """One conv applied twice (weights shared): its input and output widths are one group."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.shared = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.shared(x))
        x = torch.relu(self.shared(x))
        return self.head(x.mean(dim=(2, 3)))


class DataDependentBlock(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: FX cannot trace it
            return self.conv(x)
        return x


class UntraceableModel(nn.Module):

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = DataDependentBlock()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean(dim=(2, 3)))


def prepare(model, **kwargs):
    reference = copy.deepcopy(model).eval()
    mutator = build_mutator(**kwargs)
    mutator.prepare_from_supernet(model)
    model.eval()
    return mutator, reference


def widths(mutator):
    return sorted(m.num_channels for m in mutator.width_mutables)


def assert_exact_at_hard_ones(model, reference, mutator, shape=(2, 3, 16, 16)):
    assert_hard_ones_reproduce(model, reference, mutator.dms_mutables(), shape)


def test_concat_consumer_gets_both_groups():
    model = ConcatModel()
    mutator, reference = prepare(model)
    assert widths(mutator) == [6, 8, 10]
    container = model.c.get_mutable_attr('in_channels')
    assert isinstance(model.c, DMSConv2d)
    assert sorted(container.mutable_channels) == [(0, 8), (8, 14)]
    # each branch's channels are masked by their own group
    a, b = (mutator._name2unit[n].mutable_channel for n in mutator._name2unit
            if n.startswith(('a.', 'b.')))
    assert torch.equal(container.soft_mask, torch.cat([a.soft_mask, b.soft_mask]))
    assert_exact_at_hard_ones(model, reference, mutator)


def test_depthwise_and_grouped_convs_tie_in_and_out():
    model = GroupedConvModel()
    mutator, reference = prepare(model)
    # stem, dw and grouped share one width; MMRazor keeps grouped-conv groups whole
    names = [u.name for u in mutator.mutable_units]
    assert any(n.startswith('stem') for n in names)
    stem_unit = next(u for u in mutator.mutable_units if u.name.startswith('stem'))
    assert {'dw', 'stem'} <= set(stem_unit.layer_names())
    assert_exact_at_hard_ones(model, reference, mutator)


def test_a_module_used_twice_is_one_group():
    model = SharedLayerModel()
    mutator, reference = prepare(model)
    unit = next(u for u in mutator.mutable_units if 'shared' in u.layer_names())
    assert {'stem', 'shared', 'head'} <= set(unit.layer_names())
    assert_exact_at_hard_ones(model, reference, mutator)


def test_pruning_channels_equals_zeroing_them_in_the_reference():
    """A hard mask removing channels = the unmodified model with those activations zeroed."""
    model = ConcatModel()
    mutator, reference = prepare(model)
    unit = next(u for u in mutator.mutable_units if u.name.startswith('a.'))
    unit.mutable_channel.importance.copy_(torch.arange(8, 0, -1).float())
    unit.mutable_channel.current_choice = 5
    unit.mutable_channel.fix_chosen()
    for m in mutator.dms_mutables():
        if not m.is_fixed:
            m.fix_chosen()
    x = torch.randn(2, 3, 16, 16)
    keep = torch.tensor([1.0] * 5 + [0.0] * 3).view(1, -1, 1, 1)
    with torch.no_grad():
        expected = reference.head(reference.c(torch.cat(
            [reference.a(x) * keep, reference.b(x)], dim=1)).mean(dim=(2, 3)))
        assert torch.allclose(model(x), expected, rtol=1e-5, atol=1e-6)


def test_untraceable_module_is_named_with_the_way_out():
    with pytest.raises(UntraceableModuleError) as info:
        prepare(UntraceableModel())
    message = str(info.value)
    assert "module 'block'" in message and 'DataDependentBlock' in message
    assert 'leaf_modules=' in message
    # the way out it names works: the block becomes a leaf and its channels stay fixed
    path = f'{DataDependentBlock.__module__}.DataDependentBlock'
    mutator, _ = prepare(UntraceableModel(), leaf_modules=[path])
    assert 'block.conv' in mutator.unsearched_layers


def test_unknown_block_type_is_refused():
    with pytest.raises(ValueError, match="Residual block type 'no.such.Block' does not exist"):
        build_mutator(block_types=['no.such.Block'])
