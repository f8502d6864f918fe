# Copyright (c) mmdms contributors. All rights reserved.
"""Swin: the stream (through patch merging's unfold and the window attentions, which read the
stream width from their input) is searched, and a random structure exports exactly. The window
attentions' heads and qk / v head dims are searched too (shifted windows included): the
exported attentions keep fewer heads and dims, their bias tables the kept heads, and the static
model computes and costs exactly what the hard-masked search model does. So are BEiT's
(q / v biases, a relative position bias table per layer or one shared by all layers), HiViT's,
Twins' (sub-sampled keys and values; windows over a padded map) and XCiT's class attention (one
query, three linears; its cross-covariance attention keeps its heads)."""
import pytest
import torch

from dms_test_utils import (assert_exact_export, assert_head_ratios_get_gradients,
                             mmpretrain_classifier, search_and_export)
from mmdms.models.adapters.mmpretrain_stream_attention import (
    BEiTAttention, ClassAttntion, GlobalSubsampledAttention, HiViTAttention,
    LocallyGroupedSelfAttention, PrunedBEiTAttention, PrunedClassAttntion,
    PrunedGlobalSubsampledAttention, PrunedHiViTAttention, PrunedLocallyGroupedSelfAttention,
    PrunedWindowMSA, PrunedXCA, WindowMSA, XCA, window_msa_forward)
from mmdms.utils import count_macs

SHAPE = (1, 3, 64, 64)


def tiny_swin():
    torch.manual_seed(0)
    return mmpretrain_classifier(
        dict(type='SwinTransformer', arch=dict(embed_dims=32, depths=[1, 1], num_heads=[1, 2]),
             img_size=64, window_size=4, out_indices=(1, )), in_channels=64)


def test_window_msa_forward_is_the_original():
    attn = tiny_swin().backbone.stages[0].blocks[0].attn.w_msa
    x = torch.randn(3, 16, 32)
    with torch.no_grad():
        torch.testing.assert_close(window_msa_forward(attn, x), attn(x))


def test_swin_stream_is_searched_and_exports_exactly():
    search, subnet, static = search_and_export(tiny_swin, SHAPE, seed=3)
    space = search.space
    assert space.weight_coverage >= 0.9, space.unsearched_layers
    # the stream of stage 0 is read 4x expanded by patch merging's norm and reduction
    merge = subnet['layers']['backbone.stages.0.downsample.reduction']
    assert merge['in_channels'] == 4 * 32 and merge['kept_in'] is not None
    assert isinstance(static.architecture.backbone.stages[0].blocks[0].attn.w_msa,
                      PrunedWindowMSA)
    assert_exact_export(search, subnet, static, SHAPE)



def tiny_shifted_swin():
    """Two blocks per stage (the second one's windows shifted), two and four heads of 16
    dims, 4 x 4 windows: 16 windows of 16 tokens in stage 0, 4 in stage 1."""
    torch.manual_seed(0)
    return mmpretrain_classifier(
        dict(type='SwinTransformer', arch=dict(embed_dims=32, depths=[2, 2], num_heads=[2, 4]),
             img_size=64, window_size=4, out_indices=(1, )), in_channels=64)


def window_attentions(model):
    return [n for n, m in model.named_modules() if type(m) is WindowMSA]


def keep_blocks_prune_heads(search):
    """Every block kept (the shifted ones too), one head fewer in every attention."""
    for stage in search.space.stages.values():
        stage.mutable.set_kept(stage.mutable.num_elements)
    for attention in search.space.attentions.values():
        attention.heads.set_kept(attention.heads.num_elements - 1)


def test_swin_heads_and_head_dims_are_searched():
    model = tiny_shifted_swin()
    names = window_attentions(model)
    assert any(model.get_submodule(n.rpartition('.')[0]).shift_size for n in names)
    from mmdms.models import DMS
    search = DMS(model, mutator=dict(type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=SHAPE, tracer_type='FxTracer')))
    space = search.space
    assert sorted(space.attentions) == sorted(names)
    for name in names:
        att = space.attentions[name]
        heads = model.get_submodule(name).num_heads
        assert (att.heads.num_elements, att.qk_dims.num_channels,
                att.v_dims.num_channels) == (heads, 16, 16)
        assert att.heads.lambda_ == 4 * heads  # the paper's 4N for heads
        assert {f'{name}.heads', f'{name}.qk_dims', f'{name}.v_dims'} <= set(space.widths)
        assert f'{name}.relative_position_bias_table' in space.params
    assert space.weight_coverage >= 0.9, space.unsearched_layers


def test_swin_searched_heads_export_exactly():
    search, subnet, static = search_and_export(tiny_shifted_swin, SHAPE, seed=3,
                                               structure=keep_blocks_prune_heads)
    supernet = tiny_shifted_swin()
    assert not subnet['removed_blocks']
    for name, spec in subnet['attentions'].items():
        attn = static.architecture.get_submodule(name)
        full = supernet.get_submodule(name)
        assert isinstance(attn, PrunedWindowMSA)
        heads, qk, v = (spec[k]['kept'] for k in ('heads', 'qk_dims', 'v_dims'))
        assert heads == full.num_heads - 1
        assert (attn.num_heads, attn.qk_dims, attn.v_dims) == (heads, qk, v)
        assert attn.qkv.out_features == heads * (2 * qk + v)
        assert attn.proj.in_features == heads * v
        # the bias table keeps the kept heads' columns; the softmax scale is the supernet's
        torch.testing.assert_close(
            attn.relative_position_bias_table,
            full.relative_position_bias_table[:, spec['heads']['indices']], rtol=0, atol=0)
        assert attn.scale == full.scale
    assert len(subnet['attentions']) == 4
    assert_exact_export(search, subnet, static, SHAPE)
    # every window's q k^T and attn v, counted by FlopAnalyzer on the static model
    assert count_macs(static, SHAPE) == subnet['macs']


def test_gradient_reaches_swin_head_ratios():
    assert_head_ratios_get_gradients(tiny_shifted_swin(), SHAPE, 12)


def tiny_beit(shared=False):
    """Two layers of four heads of 8 dims on 16 patches and a class token, q / v biases, a
    relative position bias table per layer (``shared``: one of the backbone's for all layers),
    all random (so that slicing them matters)."""
    torch.manual_seed(0)
    model = mmpretrain_classifier(
        dict(type='BEiTViT', arch=dict(embed_dims=32, num_layers=2, num_heads=4,
                                       feedforward_channels=64),
             img_size=32, patch_size=8, layer_scale_init_value=0.1, use_rel_pos_bias=not shared,
             use_shared_rel_pos_bias=shared, out_type='avg_featmap'),
        in_channels=32, neck=None)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.rpartition('.')[2] in ('q_bias', 'v_bias', 'relative_position_bias_table'):
                param.normal_()
    return model


@pytest.mark.parametrize('shared', [False, True])
def test_beit_heads_are_searched_and_export_exactly(shared):
    shape = (1, 3, 32, 32)
    search, subnet, static = search_and_export(lambda: tiny_beit(shared), shape, seed=2,
                                               structure=keep_blocks_prune_heads)
    supernet = tiny_beit(shared)
    names = [n for n, m in supernet.named_modules() if type(m) is BEiTAttention]
    assert sorted(subnet['attentions']) == sorted(names) and len(names) == 2
    for name, spec in subnet['attentions'].items():
        attn, full = static.architecture.get_submodule(name), supernet.get_submodule(name)
        heads, qk, v = (spec[k]['kept'] for k in ('heads', 'qk_dims', 'v_dims'))
        assert isinstance(attn, PrunedBEiTAttention)
        assert heads == 3 and (attn.num_heads, attn.qk_dims, attn.v_dims) == (heads, qk, v)
        assert attn.q_bias.numel() == heads * qk and attn.v_bias.numel() == heads * v
        if shared:
            assert attn.kept_heads == spec['heads']['indices']
        else:
            torch.testing.assert_close(
                attn.relative_position_bias_table,
                full.relative_position_bias_table[:, spec['heads']['indices']], rtol=0, atol=0)
    assert_exact_export(search, subnet, static, shape)
    assert count_macs(static, shape) == subnet['macs']


def test_gradient_reaches_beit_head_ratios():
    assert_head_ratios_get_gradients(tiny_beit(), (1, 3, 32, 32), 6)


def tiny_hivit():
    """Three attention blocks of four heads of 16 dims on 4 x 4 tokens, with relative position
    bias tables (random, so that slicing them matters); no stem MLP blocks, only the two patch
    merges (HiViT matches its output index against the stem's indices too)."""
    torch.manual_seed(0)
    model = mmpretrain_classifier(
        dict(type='HiViT', arch=dict(embed_dims=64, depths=[0, 0, 3], num_heads=4),
             img_size=64, patch_size=16, rpe=True, out_indices=[2]), in_channels=64)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith('relative_position_bias_table'):
                param.normal_()
    return model


def test_hivit_heads_are_searched_and_export_exactly():
    search, subnet, static = search_and_export(tiny_hivit, SHAPE, seed=4,
                                               structure=keep_blocks_prune_heads)
    supernet = tiny_hivit()
    names = [n for n, m in supernet.named_modules() if type(m) is HiViTAttention]
    assert sorted(subnet['attentions']) == sorted(names) and len(names) == 3
    for name, spec in subnet['attentions'].items():
        attn, full = static.architecture.get_submodule(name), supernet.get_submodule(name)
        heads, qk, v = (spec[k]['kept'] for k in ('heads', 'qk_dims', 'v_dims'))
        assert isinstance(attn, PrunedHiViTAttention)
        assert heads == 3 and (attn.num_heads, attn.qk_dims, attn.v_dims) == (heads, qk, v)
        torch.testing.assert_close(
            attn.relative_position_bias_table,
            full.relative_position_bias_table[:, spec['heads']['indices']], rtol=0, atol=0)
    assert_exact_export(search, subnet, static, SHAPE)
    assert count_macs(static, SHAPE) == subnet['macs']


def tiny_twins():
    """SVT: per stage a windowed attention (3 x 3 windows over 7 x 7 and 3 x 3 maps: the first
    padded to 9 x 9) and a global one (stage 0's keys and values sub-sampled 2x: 3 x 3 of
    them for 49 queries); two and four heads of 16 dims."""
    torch.manual_seed(0)
    return mmpretrain_classifier(
        dict(type='SVT', arch=dict(embed_dims=[32, 64], depths=[2, 2], num_heads=[2, 4],
                                   patch_sizes=[4, 2], strides=[4, 2], mlp_ratios=[2, 2],
                                   sr_ratios=[2, 1], window_sizes=[3, 3]),
             out_indices=(1, )), in_channels=64)


def test_twins_heads_are_searched_and_export_exactly():
    shape = (1, 3, 28, 28)
    search, subnet, static = search_and_export(tiny_twins, shape, seed=5,
                                               structure=keep_blocks_prune_heads)
    supernet = tiny_twins()
    pruned = {GlobalSubsampledAttention: PrunedGlobalSubsampledAttention,
              LocallyGroupedSelfAttention: PrunedLocallyGroupedSelfAttention}
    names = {n: type(m) for n, m in supernet.named_modules() if type(m) in pruned}
    assert sorted(subnet['attentions']) == sorted(names)
    assert set(names.values()) == set(pruned) and len(names) == 4
    for name, spec in subnet['attentions'].items():
        attn, full = static.architecture.get_submodule(name), supernet.get_submodule(name)
        heads, qk, v = (spec[k]['kept'] for k in ('heads', 'qk_dims', 'v_dims'))
        assert isinstance(attn, pruned[names[name]])
        assert heads == full.num_heads - 1
        assert (attn.num_heads, attn.qk_dims, attn.v_dims) == (heads, qk, v)
        assert attn.scale == pytest.approx(16**-0.5)  # the supernet's
    assert_exact_export(search, subnet, static, shape)
    assert count_macs(static, shape) == subnet['macs']


def tiny_xcit():
    """Two cross-covariance layers and two class-attention layers of four heads of 8 dims."""
    torch.manual_seed(0)
    return mmpretrain_classifier(
        dict(type='XCiT', img_size=32, patch_size=8, embed_dims=32, depth=2, cls_attn_layers=2,
             num_heads=4), in_channels=32, neck=None)


def test_xcit_heads_are_searched_and_export_exactly():
    """Both XCiT attentions lose a head. The class attention's heads and qk / v dims are
    searched; XCA's softmax runs over the head dims, so its heads alone are (a zeroed dim is
    not a removed one, a whole pruned head is) and its ``temperature`` is sliced."""
    shape = (1, 3, 32, 32)
    search, subnet, static = search_and_export(tiny_xcit, shape, seed=6,
                                               structure=keep_blocks_prune_heads)
    supernet = tiny_xcit()
    names = {kind: [n for n, m in supernet.named_modules() if type(m) is kind]
             for kind in (ClassAttntion, XCA)}
    assert sorted(subnet['attentions']) == sorted(names[ClassAttntion] + names[XCA])
    assert len(names[ClassAttntion]) == len(names[XCA]) == 2
    for name in names[ClassAttntion]:
        spec = subnet['attentions'][name]
        attn = static.architecture.get_submodule(name)
        heads, qk, v = (spec[k]['kept'] for k in ('heads', 'qk_dims', 'v_dims'))
        assert isinstance(attn, PrunedClassAttntion) and heads == 3
        assert (attn.q.out_features, attn.k.out_features, attn.v.out_features,
                attn.proj.in_features) == (heads * qk, heads * qk, heads * v, heads * v)
        assert attn.scale == 8**-0.5
    assert not [w for w in search.space.widths if w.startswith(tuple(names[XCA]))
                and not w.endswith('.heads')]
    for name in names[XCA]:
        spec = subnet['attentions'][name]
        attn = static.architecture.get_submodule(name)
        assert isinstance(attn, PrunedXCA) and spec['heads']['kept'] == 3
        assert spec['qk_dims']['kept'] == spec['v_dims']['kept'] == 8
        assert attn.temperature.shape[0] == 3 and attn.qkv.out_features == 3 * 3 * 8
    assert_exact_export(search, subnet, static, shape)
    assert count_macs(static, shape) == subnet['macs']
