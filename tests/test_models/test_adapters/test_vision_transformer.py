# Copyright (c) mmdms contributors. All rights reserved.
"""The ViT adapter on DeiT-3: its LayerScales (``gamma1`` / ``gamma2``, of the embedding
width) are sliced with the embedding, and a random structure exports exactly (the static model
failed to run: "The size of tensor a (313) must match the size of tensor b (384)").

mmpretrain's ``MultiheadAttention`` outside a ``VisionTransformer`` (T2T-ViT's and Conformer's
transformer layers, whose streams the tracer finds) has its heads and qk / v head dims searched
too, and exports exactly; T2T-ViT's attentions built with ``qk_scale`` keep their odd softmax
scale (mmpretrain divides by ``head_dims ** -0.5`` there), its ``v_shortcut`` attentions stay
unsearched."""
import pytest
import torch

from dms_test_utils import (assert_exact_export, assert_head_ratios_get_gradients,
                             mmpretrain_classifier, search_and_export)
from mmdms.models.architectures import PrunedMultiheadAttention
from mmdms.models.architectures.pruned_attention import attention_scale
from mmdms.models.adapters.vision_transformer import MultiheadAttention
from mmdms.utils import count_macs

SHAPE = (1, 3, 32, 32)


def tiny_deit3():
    torch.manual_seed(0)
    return mmpretrain_classifier(
        dict(type='DeiT3', arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                     feedforward_channels=64),
             img_size=32, patch_size=8), in_channels=32, neck=None)


def test_deit3_layer_scales_follow_the_embedding_and_export_exactly():
    search, subnet, static = search_and_export(tiny_deit3, SHAPE, seed=1)
    assert search.space.weight_coverage == 1.0
    assert {'backbone.layers.0.attn.gamma1.weight',
            'backbone.layers.0.ffn.gamma2.weight'} <= set(subnet['free_params'])
    kept = subnet['widths']['backbone.embed']['kept']
    assert kept < 32
    assert static.architecture.backbone.layers[1].ffn.gamma2.weight.shape == (kept, )
    assert_exact_export(search, subnet, static, SHAPE)


TRACED = {
    'T2T-ViT': (dict(type='T2T_ViT', img_size=64, embed_dims=48, num_layers=2,
                     t2t_cfg=dict(token_dims=16), layer_cfgs=dict(num_heads=3)), 48, None),
    'Conformer': (dict(type='Conformer', arch=dict(embed_dims=48, depths=3, num_heads=3,
                                                   channel_ratio=1), base_channels=16),
                  [64, 48], None),
}


def traced_model(family):
    backbone, channels, neck = TRACED[family]
    torch.manual_seed(0)
    if family != 'Conformer':
        return mmpretrain_classifier(backbone, in_channels=channels, neck=neck)
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    return PRETRAIN_MODELS.build(dict(
        type='ImageClassifier', backbone=backbone,
        head=dict(type='ConformerHead', num_classes=10, in_channels=channels))).eval()


def searched_attentions(model):
    return sorted(n for n, m in model.named_modules()
                  if type(m) is MultiheadAttention and not m.v_shortcut)


def keep_blocks_prune_heads(search):
    for stage in search.space.stages.values():
        stage.mutable.set_kept(stage.mutable.num_elements)
    for attention in search.space.attentions.values():
        attention.heads.set_kept(attention.heads.num_elements - 1)


@pytest.mark.parametrize('family', sorted(TRACED))
def test_traced_attention_heads_are_searched_and_export_exactly(family):
    search, subnet, static = search_and_export(lambda: traced_model(family), SHAPE, seed=1,
                                               structure=keep_blocks_prune_heads)
    supernet = traced_model(family)
    names = searched_attentions(supernet)
    assert names and sorted(subnet['attentions']) == names
    for name, spec in subnet['attentions'].items():
        attn, full = static.architecture.get_submodule(name), supernet.get_submodule(name)
        heads, qk, v = (spec[k]['kept'] for k in ('heads', 'qk_dims', 'v_dims'))
        assert isinstance(attn, PrunedMultiheadAttention)
        assert heads == 2 and (attn.num_heads, attn.qk_dims, attn.v_dims) == (heads, qk, v)
        assert attn.scale == attention_scale(full)
        if family == 'T2T-ViT':  # built with qk_scale: q k^T times sqrt(head_dims)
            assert attn.scale == pytest.approx(full.head_dims**0.5)
    assert_exact_export(search, subnet, static, SHAPE)
    assert count_macs(static, SHAPE) == subnet['macs']


def test_gradient_reaches_traced_attention_head_ratios():
    assert_head_ratios_get_gradients(traced_model('T2T-ViT'), SHAPE, 6)
