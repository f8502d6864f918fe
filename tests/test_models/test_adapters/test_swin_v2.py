# Copyright (c) mmdms contributors. All rights reserved.
"""Swin-V2: its window attention computes ``F.linear(input=x, weight=self.qkv.weight, ...)``
itself. The estimator's counting forward failed on that call (an ``IndexError``: the input
was read by position only), the stream it reads was left unsearched, and the export could not
load the search model's weights (Swin-V2's load hook drops its relative position tables). A
small real Swin-V2 is now searched and exports exactly. Its window attentions' heads and qk / v
head dims are searched too: with them its q / v biases, per-head ``logit_scale`` and the rows
of the continuous position bias MLP's last linear."""
import torch
import torch.nn.functional as F

from dms_test_utils import (assert_exact_export, assert_head_ratios_get_gradients,
                             mmpretrain_classifier, search_and_export)
from mmdms.models.adapters.mmpretrain_stream_attention import (PrunedWindowMSAV2, WindowMSAV2,
                                                               window_msa_v2_forward)
from mmdms.models.task_modules.functional_macs import _product_macs
from mmdms.utils import count_macs

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


def swin_v2_with_heads():
    """Two and four heads of 16 dims, the second block of each stage shifted, random q / v
    biases and logit scales (so that slicing them matters)."""
    torch.manual_seed(0)
    model = mmpretrain_classifier(
        dict(type='SwinTransformerV2', img_size=64, window_size=[4, 4], out_indices=(1, ),
             arch=dict(embed_dims=32, depths=[2, 2], num_heads=[2, 4],
                       extra_norm_every_n_blocks=0)), in_channels=64)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, WindowMSAV2):
                for param in (module.q_bias, module.v_bias, module.logit_scale):
                    param.add_(torch.randn(param.shape) * 0.5)
    return model


def keep_blocks_prune_heads(search):
    for stage in search.space.stages.values():
        stage.mutable.set_kept(stage.mutable.num_elements)
    for attention in search.space.attentions.values():
        attention.heads.set_kept(attention.heads.num_elements - 1)


def test_swin_v2_heads_are_searched_and_export_exactly():
    search, subnet, static = search_and_export(swin_v2_with_heads, SHAPE, seed=1,
                                               structure=keep_blocks_prune_heads)
    supernet = swin_v2_with_heads()
    names = [n for n, m in supernet.named_modules() if type(m) is WindowMSAV2]
    assert sorted(subnet['attentions']) == sorted(names) and len(names) == 4
    assert not subnet['removed_blocks']
    for name, spec in subnet['attentions'].items():
        attn, full = static.architecture.get_submodule(name), supernet.get_submodule(name)
        heads, qk, v = (spec[k]['kept'] for k in ('heads', 'qk_dims', 'v_dims'))
        kept = spec['heads']['indices']
        assert isinstance(attn, PrunedWindowMSAV2)
        assert heads == full.num_heads - 1
        assert (attn.num_heads, attn.qk_dims, attn.v_dims) == (heads, qk, v)
        assert attn.cpb_mlp[-1].out_features == heads
        torch.testing.assert_close(attn.logit_scale, full.logit_scale[kept], rtol=0, atol=0)
        q_kept = [h * 16 + d for h in kept for d in spec['qk_dims']['indices']]
        torch.testing.assert_close(attn.q_bias, full.q_bias[q_kept], rtol=0, atol=0)
        assert attn.v_bias.numel() == heads * v
    assert_exact_export(search, subnet, static, SHAPE)
    assert count_macs(static, SHAPE) == subnet['macs']


def test_gradient_reaches_swin_v2_head_ratios():
    assert_head_ratios_get_gradients(swin_v2_with_heads(), SHAPE, 12)
