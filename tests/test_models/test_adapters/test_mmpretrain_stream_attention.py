# Copyright (c) mmdms contributors. All rights reserved.
"""Swin: the stream (through patch merging's unfold and the window attentions, which read the
stream width from their input) is searched, and a random structure exports exactly."""
import torch

from dms_test_utils import assert_exact_export, mmpretrain_classifier, search_and_export
from mmdms.models.adapters.mmpretrain_stream_attention import PrunedWindowMSA, window_msa_forward

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

