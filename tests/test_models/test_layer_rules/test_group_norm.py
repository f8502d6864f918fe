# Copyright (c) mmdms contributors. All rights reserved.
"""A one-group GroupNorm (PoolFormer's) is searched like a LayerNorm: with hard masks its DMS op
is the pruned GroupNorm on the kept channels, and a small PoolFormer (79% of its weights were
searched, the GroupNorms kept every stream fixed) is searched and exports exactly."""
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from dms_test_utils import (assert_exact_export, mask_norm_input, mmpretrain_classifier,
                            search_and_export)
from mmdms.models.layer_rules import DMSGroupNorm, rule_for


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


def test_group_norms_of_several_groups_keep_their_width():
    assert rule_for(nn.GroupNorm(4, 8)).dms_op_for(nn.GroupNorm(4, 8)) is None
    assert rule_for(nn.GroupNorm(1, 8)).dms_op_for(nn.GroupNorm(1, 8)) is DMSGroupNorm


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
