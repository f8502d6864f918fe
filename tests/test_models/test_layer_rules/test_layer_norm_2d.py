# Copyright (c) mmdms contributors. All rights reserved.
"""mmpretrain's LayerNorm2d (ConvNeXt, EdgeNeXt, HorNet): with hard masks its DMS op is the
pruned LayerNorm2d in both data formats, and a small ConvNeXt-V2 (whose streams its LayerNorm2d
tied to the model's input: 71% searched) is searched whole and exports exactly."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

from dms_test_utils import assert_exact_export, mask_norm_input, search_and_export
from mmdms.models.layer_rules import DMSLayerNorm2d, LayerNorm2dRule, rule_for

LayerNorm2d = MMPRETRAIN_MODELS.get('LN2d')  # after mmdms: importing mmpretrain.models needs it


def test_layer_norm_2d_has_its_own_rule():
    assert isinstance(rule_for(LayerNorm2d(4)), LayerNorm2dRule)
    assert rule_for(LayerNorm2d(4)).dms_op_for(LayerNorm2d(4)) is DMSLayerNorm2d


@settings(max_examples=20, deadline=None)
@given(channels=st.integers(2, 10), kept=st.integers(1, 10), seed=st.integers(0, 1000),
       data_format=st.sampled_from(['channel_first', 'channel_last']))
def test_hard_masked_layer_norm_2d_is_the_pruned_one(channels, kept, seed, data_format):
    g = torch.Generator().manual_seed(seed)
    norm = LayerNorm2d(channels)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=g)
        norm.bias.uniform_(-1, 1, generator=g)
    dms = DMSLayerNorm2d.convert_from(norm)
    dms.load_state_dict(norm.state_dict())
    keep = mask_norm_input(dms, channels, kept, g)
    pruned = LayerNorm2d(int(keep.sum()))
    pruned.load_state_dict({'weight': norm.weight[keep], 'bias': norm.bias[keep]})
    x = torch.randn(2, channels, 3, 4, generator=g)
    axis = 1
    if data_format == 'channel_last':
        x, axis = x.permute(0, 2, 3, 1), 3
    with torch.no_grad():
        out = dms(x, data_format=data_format)
        torch.testing.assert_close(out.index_select(axis, keep.nonzero()[:, 0]),
                                   pruned(x.index_select(axis, keep.nonzero()[:, 0]),
                                          data_format=data_format), rtol=1e-5, atol=1e-5)
        if (~keep).any():
            assert out.index_select(axis, (~keep).nonzero()[:, 0]).abs().max() == 0


def convnext_v2():
    torch.manual_seed(0)
    return MMPRETRAIN_MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='ConvNeXt', arch=dict(depths=[2, 1, 1, 1], channels=[8, 16, 32, 64]),
                      use_grn=True, layer_scale_init_value=0.),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=64))).eval()


@pytest.mark.parametrize('seed', [0, 1])
def test_convnext_v2_streams_are_searched_and_export_exactly(seed):
    shape = (1, 3, 32, 32)
    search, subnet, static = search_and_export(convnext_v2, shape, seed=seed)
    assert search.space.weight_coverage == 1.0, search.space.unsearched_layers
    stream = [g for g in search.space.widths.values()
              if 'backbone.stages.0.0.depthwise_conv' in g.layers]
    assert len(stream) == 1 and 'backbone.downsample_layers.0.1' in stream[0].layers
    assert_exact_export(search, subnet, static, shape)
    norm = static.architecture.backbone.downsample_layers[1][0]
    assert norm.num_channels == norm.normalized_shape[0] == norm.weight.numel()
