# Copyright (c) mmdms contributors. All rights reserved.
"""A one-group GroupNorm (PoolFormer's) is searched like a LayerNorm: with hard masks its DMS op
is the pruned GroupNorm on the kept channels, and a small PoolFormer (79% of its weights were
searched, the GroupNorms kept every stream fixed) is searched and exports exactly.

A GroupNorm of several groups (mmdet's GN heads) is pruned by whole groups: the widths through
it get a step that is a multiple of the group size, its DMS op with hard masks is the pruned
GroupNorm (fewer groups) on the kept channels, MMRazor's check accepts whole groups only, and a
conv -> GN -> ReLU stack is searched through its GroupNorms and exports exactly (every width
through one stayed fixed before)."""
import copy

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st
from mmengine.model import BaseModel

from dms_test_utils import (assert_exact_export, mask_norm_input, mmpretrain_classifier,
                            search_and_export)
from mmdms.models import DMS
from mmdms.models.layer_rules import DMSGroupNorm, SubnetError, rule_for
from mmdms.models.layer_rules.layer_norm import DynamicGroupNorm
# after mmdms, whose shims let mmrazor import on this torch
from mmrazor.models.mutables import (MutableChannelContainer,  # noqa: E402,I100
                                     SimpleMutableChannel)


@settings(max_examples=20, deadline=None)
@given(channels=st.integers(2, 10), kept=st.integers(1, 10), seed=st.integers(0, 1000))
def test_hard_masked_group_norm_is_the_pruned_group_norm(channels, kept, seed):
    g = torch.Generator().manual_seed(seed)
    norm = nn.GroupNorm(1, channels)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=g)
        norm.bias.uniform_(-1, 1, generator=g)
    dms = DMSGroupNorm.convert_from(norm)
    keep = mask_norm_input(dms, channels, kept, g)
    x = torch.randn(2, channels, 3, 4, generator=g)
    pruned = nn.GroupNorm(1, int(keep.sum()))
    pruned.load_state_dict({'weight': norm.weight[keep], 'bias': norm.bias[keep]})
    with torch.no_grad():
        out = dms(x)
        torch.testing.assert_close(out[:, keep], pruned(x[:, keep]), rtol=1e-5, atol=1e-5)
        assert out[:, ~keep].abs().max() == 0 if (~keep).any() else True


def random_group_norm(groups, channels, generator):
    norm = nn.GroupNorm(groups, channels)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=generator)
        norm.bias.uniform_(-1, 1, generator=generator)
    return norm


@settings(max_examples=25, deadline=None)
@given(groups=st.integers(2, 6), size=st.integers(1, 4), kept=st.integers(1, 6),
       seed=st.integers(0, 1000))
def test_hard_masked_multi_group_norm_is_the_pruned_group_norm(groups, size, kept, seed):
    """Kept whole groups: the DMS op's kept channels are the pruned GroupNorm's output, with
    ``kept`` groups."""
    g = torch.Generator().manual_seed(seed)
    channels = groups * size
    norm = random_group_norm(groups, channels, g)
    assert rule_for(norm).channel_step(norm) == size
    dms = DMSGroupNorm.convert_from(norm)
    keep = mask_norm_input(dms, channels, min(kept, groups) * size, g, step=size)
    pruned = copy.deepcopy(norm)
    rule_for(norm).prune(pruned, keep.nonzero().flatten().tolist(), None, 'gn')
    assert pruned.num_groups == min(kept, groups) and pruned.num_channels == int(keep.sum())
    x = torch.randn(2, channels, 3, 4, generator=g) * 3 + 1
    with torch.no_grad():
        torch.testing.assert_close(dms(x)[:, keep], pruned(x[:, keep]), rtol=1e-5, atol=1e-5)


def check_op(norm, keep):
    """MMRazor's check op of ``norm`` with the channel mask ``keep`` registered."""
    op = DynamicGroupNorm.convert_from(norm)
    mutable = SimpleMutableChannel(norm.num_channels)
    mutable.current_choice = keep
    container = MutableChannelContainer(norm.num_channels)
    container.register_mutable(mutable, 0, norm.num_channels)
    op.register_mutable_attr('in_channels', container)
    return op


def test_pruning_check_accepts_whole_groups_only():
    g = torch.Generator().manual_seed(0)
    norm = random_group_norm(4, 12, g)
    x = torch.randn(2, 12, 5, 5, generator=g)
    whole = torch.tensor([1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1], dtype=torch.bool)
    expected = nn.GroupNorm(3, 9)
    expected.load_state_dict({'weight': norm.weight[whole], 'bias': norm.bias[whole]})
    with torch.no_grad():
        torch.testing.assert_close(check_op(norm, whole)(x[:, whole]), expected(x[:, whole]))
    cut = torch.tensor([1] * 10 + [0] * 2, dtype=torch.bool)  # 3 groups and a third of one
    with pytest.raises(RuntimeError, match='whole groups'):
        check_op(norm, cut)(x[:, cut])


def test_export_keeps_whole_groups_only():
    norm = nn.GroupNorm(4, 12)
    rule = rule_for(norm)
    pruned = copy.deepcopy(norm)
    rule.prune(pruned, None, [3, 4, 5, 9, 10, 11], 'head.gn')
    assert (pruned.num_groups, pruned.num_channels, pruned.weight.numel()) == (2, 6, 6)
    for kept in ([0, 1, 2, 3], [1, 2, 3], [0, 2, 1]):  # a third of a group; out of order
        with pytest.raises(SubnetError, match="'head.gn'.*whole groups"):
            rule.prune(copy.deepcopy(norm), kept, kept, 'head.gn')


class GNStack(BaseModel):
    """conv -> GN(4 groups) -> ReLU -> conv -> GN(3 groups) -> ReLU -> conv, pooled."""

    def __init__(self, gn1=(4, 16), gn2=(3, 24)):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, gn1[1], 3, padding=1), nn.GroupNorm(*gn1), nn.ReLU(),
            nn.Conv2d(gn1[1], gn2[1], 3, padding=1), nn.GroupNorm(*gn2), nn.ReLU(),
            nn.Conv2d(gn2[1], 8, 1))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return self.body(inputs).mean(dim=(2, 3))


def gn_stack():
    torch.manual_seed(0)
    model = GNStack().eval()
    with torch.no_grad():
        for norm in (model.body[1], model.body[4]):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    return model


@pytest.mark.parametrize('seed', [0, 3])
def test_gn_stack_is_searched_through_its_group_norms_and_exports_exactly(seed):
    shape = (1, 3, 12, 12)
    search, subnet, static = search_and_export(gn_stack, shape, seed=seed)
    assert search.space.weight_coverage == 1.0, search.space.unsearched_layers
    steps = {tuple(g.layers): g.mutable.step for g in search.space.widths.values()}
    assert steps == {('body.0', 'body.1', 'body.3'): 4, ('body.3', 'body.4', 'body.6'): 8}
    assert "step=4 (whole blocks of 4 channels of 'body.1')" in search.space.summary()
    for index, size in ((1, 4), (4, 8)):
        norm = static.architecture.body[index]
        assert norm.num_groups == norm.num_channels // size
    assert_exact_export(search, subnet, static, shape)


def test_width_step_is_the_lcm_of_the_configured_step_and_the_groups():
    search = DMS(gn_stack(), mutator=dict(
        type='DMSMutator', channel_unit_cfg=dict(type='DMSChannelUnit',
                                                 default_args=dict(step=6)),
        parse_cfg=dict(type='ChannelAnalyzer', demo_input=(1, 3, 12, 12),
                       tracer_type='FxTracer')))
    # 16 channels in groups of 4: lcm(6, 4) = 12; 24 in groups of 8: lcm(6, 8) = 24, one block
    assert [(g.layers, g.mutable.step) for g in search.space.widths.values()] == \
        [(['body.0', 'body.1', 'body.3'], 12)]
    assert "step=12 (a multiple of the configured step 6 in whole blocks of 4 channels of " \
        "'body.1')" in search.space.summary()
    assert 'one block' in search.mutator.unsearched_reasons['body.4']


class ConcatGN(BaseModel):
    """Two convs (6 and 10 channels) concatenated into one GN of 4 groups of 4: each conv's
    channels straddle a group boundary, so neither width can be pruned by whole groups."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(3, 10, 3, padding=1)
        self.gn = nn.GroupNorm(4, 16)
        self.out = nn.Conv2d(16, 8, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.cat([self.a(inputs), self.b(inputs)], dim=1)
        return self.out(torch.relu(self.gn(x))).mean(dim=(2, 3))


def test_widths_that_cut_a_group_stay_fixed_with_the_reason():
    search = DMS(ConcatGN(), mutator=dict(type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=(1, 3, 8, 8), tracer_type='FxTracer')))
    assert search.space.widths == {}
    reasons = search.mutator.unsearched_reasons
    assert "'gn' (GroupNorm) is pruned in whole blocks of 4" in reasons['gn']
    assert 'not whole blocks' in reasons['gn']


def tiny_poolformer():
    torch.manual_seed(0)
    return mmpretrain_classifier(
        dict(type='PoolFormer', arch=dict(layers=[1, 1], embed_dims=[16, 32], mlp_ratios=[2, 2],
                                          layer_scale_init_value=0.1),
             out_indices=(2, ), frozen_stages=0), in_channels=32)


def test_poolformer_is_searched_and_exports_exactly():
    shape = (1, 3, 32, 32)
    search, subnet, static = search_and_export(tiny_poolformer, shape, seed=1)
    assert search.space.weight_coverage >= 0.9, search.space.unsearched_layers
    assert any(n.endswith('layer_scale_1') for n in subnet['free_params'])
    assert_exact_export(search, subnet, static, shape)
