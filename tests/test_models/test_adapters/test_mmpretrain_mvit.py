# Copyright (c) mmdms contributors. All rights reserved.
"""MViT-V2 (:mod:`mmdms.models.adapters.mmpretrain_mvit`): its attentions' heads are searched
with their dims kept (masked on ``proj``'s input: each head's pooled q, k and v are normalised,
so a zeroed ``qkv`` row is not a removed head), and a structure with heads removed exports
exactly, the pooling, norms and per-head products counted for the kept heads."""
import torch

from dms_test_utils import (assert_exact_export, assert_head_ratios_get_gradients,
                            mmpretrain_classifier, search_and_export)
from mmdms.utils import count_macs

SHAPE = (1, 3, 32, 32)


def tiny_mvit():
    """Three blocks of 2, 2 and 4 heads (the last after a stride-2 pooling of q), relative
    positions on; random weights everywhere so that every head matters."""
    torch.manual_seed(0)
    return mmpretrain_classifier(
        dict(type='MViT', arch=dict(embed_dims=16, num_layers=3, num_heads=2,
                                    downscale_indices=[2]),
             img_size=32, rel_pos_zero_init=False), in_channels=32)


def test_mvit_heads_are_searched_and_export_exactly():
    def one_head_fewer(search):
        for stage in search.space.stages.values():  # every block kept, to see every head
            stage.mutable.set_kept(stage.mutable.num_elements)
        for attention in search.space.attentions.values():
            attention.heads.set_kept(attention.heads.num_elements - 1)

    search, subnet, static = search_and_export(tiny_mvit, SHAPE, seed=1,
                                               structure=one_head_fewer)
    supernet = tiny_mvit()
    names = [n for n, m in supernet.named_modules() if type(m).__name__ == 'MultiScaleAttention']
    assert sorted(subnet['attentions']) == sorted(names) and len(names) == 3
    for name in names:
        attn, full = static.architecture.get_submodule(name), supernet.get_submodule(name)
        head_dims = full.out_dims // full.num_heads
        assert attn.num_heads == full.num_heads - 1
        assert attn.qkv.out_features == 3 * attn.out_dims == 3 * attn.num_heads * head_dims
        assert attn.pool_q.in_channels == head_dims  # shared by the heads
    assert_exact_export(search, subnet, static, SHAPE)
    assert count_macs(static, SHAPE) == subnet['macs']


def test_gradient_reaches_mvit_head_ratios():
    assert_head_ratios_get_gradients(tiny_mvit(), SHAPE, 3)
