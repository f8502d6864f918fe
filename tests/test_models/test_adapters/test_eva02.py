# Copyright (c) mmdms contributors. All rights reserved.
"""EVA-02: the ViT search space refused its rotary attention (a ``SearchSpaceBuildError``); it
is now traced, with its stream, SwiGLU widths and heads searched and its head dims fixed (the
rotary embedding pairs them), and a small real EVA-02, searched on a smaller input than it was
built for (its rotary tables are then recomputed at another size), exports exactly."""
import torch

from dms_test_utils import assert_exact_export, mmpretrain_classifier, search_and_export
from mmdms.models.adapters.mmpretrain_eva02 import rope_attention_forward, swiglu_ffn_forward

SHAPE = (1, 3, 32, 32)


def tiny_eva02():
    torch.manual_seed(0)
    return mmpretrain_classifier(
        dict(type='ViTEVA02', img_size=48, patch_size=8,
             arch=dict(embed_dims=48, num_layers=2, num_heads=2, feedforward_channels=64)),
        in_channels=48, neck=None)


def test_trace_forwards_are_the_originals():
    layer = tiny_eva02().backbone.layers[0]
    x = torch.randn(2, 1 + 36, 48)  # the class token and 6 x 6 patches
    with torch.no_grad():
        torch.testing.assert_close(rope_attention_forward(layer.attn, x, (6, 6)),
                                   layer.attn(x, (6, 6)))
        torch.testing.assert_close(swiglu_ffn_forward(layer.mlp, x), layer.mlp(x))


def test_eva02_stream_and_mlp_are_searched_and_export_exactly():
    search, subnet, static = search_and_export(tiny_eva02, SHAPE, seed=3)
    space = search.space
    assert space.weight_coverage >= 0.9, space.unsearched_layers
    attentions = [f'backbone.layers.{i}.attn' for i in range(2)]
    assert sorted(space.attentions) == attentions
    # the heads alone are searched: the rotary embedding pairs the head dims
    assert not [w for w in space.widths if w.endswith(('.qk_dims', '.v_dims'))]
    w12 = subnet['layers']['backbone.layers.0.mlp.w12']
    assert w12['kept_in'] is not None and w12['kept_out'] is not None
    assert {'backbone.cls_token', 'backbone.pos_embed'} <= set(subnet['free_params'])
    assert_exact_export(search, subnet, static, SHAPE)


def test_eva02_heads_are_searched_with_their_dims_kept():
    def one_head(search):
        for attention in search.space.attentions.values():
            attention.heads.set_kept(1)

    search, subnet, static = search_and_export(tiny_eva02, SHAPE, seed=4, structure=one_head)
    for name, spec in subnet['attentions'].items():
        attn = static.architecture.get_submodule(name)
        assert attn.num_heads == spec['heads']['kept'] == 1
        assert spec['qk_dims']['kept'] == spec['qk_dims']['total'] == attn.head_dims == 24
        assert attn.qkv.out_features == 3 * 24 and attn.proj.in_features == 24
        assert attn.scale == 24**-0.5
    assert_exact_export(search, subnet, static, SHAPE)
