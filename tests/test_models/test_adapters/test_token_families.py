# Copyright (c) mmdms contributors. All rights reserved.
"""Small real token models of mmpretrain whose attentions read the stream width from their
input (:mod:`mmdms.models.adapters.mmpretrain_stream_attention`) or whose position table is a
buffer (T2T-ViT, :mod:`mmdms.models.mutators.layout_nodes`): at least 90% of their
conv / linear weights are searched, and a random structure exports exactly (outputs of the
hard-masked search model, FlopAnalyzer's MACs, parameters)."""
import pytest
import torch

from dms_test_utils import assert_exact_export, mmpretrain_classifier, search_and_export

SHAPE = (1, 3, 32, 32)

BACKBONES = {
    # SDTA blocks: channel attention (ChannelMultiheadAttention) and the Fourier position
    # encoding in stage 1; layer scale 1 so that every branch shows in the outputs
    'EdgeNeXt': (dict(type='EdgeNeXt', arch=dict(channels=[16, 24, 32, 48], depths=[1, 2, 2, 2],
                                                 num_heads=[2, 2, 2, 2]),
                      layer_scale_init_value=1.0), 48, None),
    # its position table is a buffer, resized to the input by interpolation
    'T2T-ViT': (dict(type='T2T_ViT', img_size=64, embed_dims=48, num_layers=6,
                     t2t_cfg=dict(token_dims=16), layer_cfgs=dict(num_heads=2)), 48, None),
    'XCiT': (dict(type='XCiT', img_size=32, patch_size=8, embed_dims=32, depth=2,
                  cls_attn_layers=1, num_heads=2), 32, None),
    'Twins': (dict(type='SVT', arch=dict(embed_dims=[16, 32], depths=[1, 1],
                                         num_heads=[1, 2], patch_sizes=[4, 2],
                                         strides=[4, 2], mlp_ratios=[2, 2], sr_ratios=[2, 1],
                                         window_sizes=[2, 2]), out_indices=(1, )),
              32, 'GlobalAveragePooling'),
}


@pytest.mark.parametrize('family', sorted(BACKBONES))
def test_token_family_stream_is_searched_and_exports_exactly(family):
    backbone, channels, neck = BACKBONES[family]

    def build():
        torch.manual_seed(0)
        return mmpretrain_classifier(backbone, in_channels=channels, neck=neck)

    search, subnet, static = search_and_export(build, SHAPE, seed=1)
    assert search.space.weight_coverage >= 0.9, search.space.unsearched_layers
    if family == 'EdgeNeXt':  # the channel attentions' streams (stages 1-3 were fixed)
        searched = {n for group in search.space.widths.values() for n in group.layers}
        assert {f'backbone.stages.{i}.1.csa.qkv' for i in (1, 2, 3)} <= searched
    if family == 'T2T-ViT':  # the stream slices the fixed position table (a buffer)
        assert 'backbone.pos_embed' in subnet['free_params']
    assert_exact_export(search, subnet, static, SHAPE)


def test_edgenext_channel_attention_heads_are_searched_with_their_dims_kept():
    """EdgeNeXt's channel attention runs its softmax over the head dims: its heads alone are
    searched (one of two kept here) and its learnable per-head ``scale`` is sliced."""
    backbone, channels, neck = BACKBONES['EdgeNeXt']

    def build():
        torch.manual_seed(0)
        return mmpretrain_classifier(backbone, in_channels=channels, neck=neck)

    def one_head(search):
        for attention in search.space.attentions.values():
            attention.heads.set_kept(1)

    search, subnet, static = search_and_export(build, SHAPE, seed=2, structure=one_head)
    attentions = {f'backbone.stages.{i}.1.csa' for i in (1, 2, 3)}
    assert attentions <= set(subnet['attentions'])
    for name in attentions:
        spec, attn = subnet['attentions'][name], static.architecture.get_submodule(name)
        assert attn.num_heads == spec['heads']['kept'] == 1
        assert spec['qk_dims']['kept'] == spec['qk_dims']['total']
        assert isinstance(attn.scale, torch.nn.Parameter) and attn.scale.shape == (1, 1, 1)
    assert_exact_export(search, subnet, static, SHAPE)
