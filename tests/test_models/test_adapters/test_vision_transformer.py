# Copyright (c) mmdms contributors. All rights reserved.
"""The ViT adapter on DeiT-3: its LayerScales (``gamma1`` / ``gamma2``, of the embedding
width) are sliced with the embedding, and a random structure exports exactly (the static model
failed to run: "The size of tensor a (313) must match the size of tensor b (384)")."""
import torch

from dms_test_utils import assert_exact_export, mmpretrain_classifier, search_and_export

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
