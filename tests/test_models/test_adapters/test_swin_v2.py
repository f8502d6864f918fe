# Copyright (c) mmdms contributors. All rights reserved.
"""Swin-V2: its window attention computes ``F.linear(input=x, weight=self.qkv.weight, ...)``
itself. The estimator's counting forward failed on that call (an ``IndexError``: the input
was read by position only), the stream it reads was left unsearched, and the export could not
load the search model's weights (Swin-V2's load hook drops its relative position tables). A
small real Swin-V2 is now searched and exports exactly."""
import torch
import torch.nn.functional as F

from dms_test_utils import assert_exact_export, mmpretrain_classifier, search_and_export
from mmdms.models.adapters.mmpretrain_stream_attention import (PrunedWindowMSAV2,
                                                               window_msa_v2_forward)
from mmdms.models.task_modules.functional_macs import _product_macs

SHAPE = (1, 3, 64, 64)


def tiny_swin_v2():
    torch.manual_seed(0)
    return mmpretrain_classifier(
        dict(type='SwinTransformerV2', img_size=64, window_size=[4, 4], out_indices=(1, ),
             arch=dict(embed_dims=32, depths=[2, 2], num_heads=[1, 2],
                       extra_norm_every_n_blocks=0)), in_channels=64)


def test_functional_linear_by_keyword_is_counted():
    x, weight = torch.randn(2, 5, 4), torch.randn(6, 4)
    assert _product_macs(F.linear, (), dict(input=x, weight=weight, bias=None)) == 2 * 5 * 4 * 6
    assert _product_macs(F.linear, (x, weight), {}) == 2 * 5 * 4 * 6


def test_window_msa_v2_forward_is_the_original():
    attn = tiny_swin_v2().backbone.stages[0].blocks[1].attn.w_msa
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.v_bias.normal_()
    x, mask = torch.randn(4, 16, 32), torch.zeros(4, 16, 16)
    mask[:, :, :3] = -100.0
    with torch.no_grad():
        torch.testing.assert_close(window_msa_v2_forward(attn, x), attn(x))
        torch.testing.assert_close(window_msa_v2_forward(attn, x, mask), attn(x, mask))


def test_swin_v2_stream_is_searched_and_exports_exactly():
    search, subnet, static = search_and_export(tiny_swin_v2, SHAPE, seed=3)
    space = search.space
    assert space.weight_coverage >= 0.9, space.unsearched_layers
    # qkv is called only through F.linear on its weight: counted by its rule, with its masks
    qkv = 'backbone.stages.0.blocks.0.attn.w_msa.qkv'
    assert any(call.name == qkv for call in search.estimator.calls)
    assert subnet['layers'][qkv]['kept_in'] is not None
    assert isinstance(static.architecture.backbone.stages[0].blocks[0].attn.w_msa,
                      PrunedWindowMSAV2)
    assert_exact_export(search, subnet, static, SHAPE)
