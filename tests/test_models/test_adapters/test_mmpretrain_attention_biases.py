# Copyright (c) mmdms contributors. All rights reserved.
"""TinyViT's ``LeAttention`` (``qkv`` laid out per head, a learnt bias per head and offset, run
on windows) and EfficientFormer's ``AttentionWithBias`` (the same, with v dims 4x the qk dims):
their heads and qk / v head dims are searched, the exported attentions keep fewer heads and
dims and their biases the kept heads', and the static model computes and costs (every
window's attention, by FlopAnalyzer) exactly what the hard-masked search model does."""
import torch

from dms_test_utils import (assert_exact_export, assert_head_ratios_get_gradients,
                             mmpretrain_classifier, search_and_export)
from mmdms.models.adapters.mmpretrain_attention_biases import (AttentionWithBias, LeAttention,
                                                               PrunedAttentionWithBias,
                                                               PrunedLeAttention)
from mmdms.utils import count_macs

SHAPE = (1, 3, 64, 64)


def tiny_tinyvit():
    """Attention in stages 1-3 (2, 3 and 4 heads of 16 dims) on 4 x 4 windows of 8 x 8 and
    4 x 4 maps and a 2 x 2 map in one 2 x 2 window; random attention biases."""
    torch.manual_seed(0)
    model = mmpretrain_classifier(
        dict(type='TinyViT', arch=dict(channels=[16, 32, 48, 64], num_heads=[1, 2, 3, 4],
                                       depths=[1, 1, 2, 1]),
             img_size=(64, 64), window_size=[4, 4, 4, 2], out_indices=(3, )),
        in_channels=64, neck=None)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LeAttention):
                module.attention_biases.normal_()
                module.train(False)  # its eval-mode bias cache
    return model


def keep_blocks_prune_heads(search):
    for stage in search.space.stages.values():
        stage.mutable.set_kept(stage.mutable.num_elements)
    for attention in search.space.attentions.values():
        attention.heads.set_kept(attention.heads.num_elements - 1)


def test_tinyvit_heads_are_searched_and_export_exactly():
    search, subnet, static = search_and_export(tiny_tinyvit, SHAPE, seed=1,
                                               structure=keep_blocks_prune_heads)
    supernet = tiny_tinyvit()
    names = [n for n, m in supernet.named_modules() if type(m) is LeAttention]
    assert sorted(subnet['attentions']) == sorted(names) and len(names) == 4
    for name, spec in subnet['attentions'].items():
        attn, full = static.architecture.get_submodule(name), supernet.get_submodule(name)
        heads, qk, v = (spec[k]['kept'] for k in ('heads', 'qk_dims', 'v_dims'))
        assert isinstance(attn, PrunedLeAttention)
        assert heads == full.num_heads - 1
        assert (attn.num_heads, attn.key_dim, attn.d, attn.dh) == (heads, qk, v, heads * v)
        assert attn.scale == full.scale
        torch.testing.assert_close(attn.attention_biases,
                                   full.attention_biases[spec['heads']['indices']],
                                   rtol=0, atol=0)
    assert_exact_export(search, subnet, static, SHAPE)
    assert count_macs(static, SHAPE) == subnet['macs']


def test_gradient_reaches_tinyvit_head_ratios():
    assert_head_ratios_get_gradients(tiny_tinyvit(), SHAPE, 12)


def tiny_efficientformer():
    """Four stages of 8-32 channels; the last stage's second block a ViT block (8 heads, qk dims
    32, v dims 128, on the 7 x 7 map of a 224 x 224 input); random attention biases."""
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    torch.manual_seed(0)
    model = PRETRAIN_MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='EfficientFormer',
                      arch=dict(layers=[1, 1, 1, 2], embed_dims=[8, 16, 24, 32],
                                downsamples=[False, True, True, True], vit_num=1)),
        neck=dict(type='GlobalAveragePooling', dim=1),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=32))).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, AttentionWithBias):
                module.attention_biases.normal_()
                module.train(False)
    return model


def test_efficientformer_heads_are_searched_and_export_exactly():
    shape = (1, 3, 224, 224)
    search, subnet, static = search_and_export(tiny_efficientformer, shape, seed=2,
                                               structure=keep_blocks_prune_heads)
    supernet = tiny_efficientformer()
    names = [n for n, m in supernet.named_modules() if type(m) is AttentionWithBias]
    assert sorted(subnet['attentions']) == sorted(names) and len(names) == 1
    for name, spec in subnet['attentions'].items():
        attn, full = static.architecture.get_submodule(name), supernet.get_submodule(name)
        heads, qk, v = (spec[k]['kept'] for k in ('heads', 'qk_dims', 'v_dims'))
        assert isinstance(attn, PrunedAttentionWithBias)
        assert (spec['qk_dims']['total'], spec['v_dims']['total']) == (32, 128)
        assert heads == 7 and (attn.num_heads, attn.key_dim, attn.d) == (heads, qk, v)
        assert attn.scale == full.scale
        torch.testing.assert_close(attn.attention_biases,
                                   full.attention_biases[spec['heads']['indices']],
                                   rtol=0, atol=0)
    assert_exact_export(search, subnet, static, shape)
    assert count_macs(static, shape) == subnet['macs']
