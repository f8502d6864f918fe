# Copyright (c) mmdms contributors. All rights reserved.
"""RevViT (:mod:`mmdms.models.adapters.mmpretrain_revvit`): its reversible layers, which built a
drop path inside their forward and were untraceable, are traced; the two streams are one width
(both start as the embedded tokens), the FFNs and the attentions' heads and head dims are
searched, the export is exact, and in training mode every ratio gets its gradient through the
autograd graph (the backbone's reversible backward, ``RevBackProp``, would carry none of
them)."""
import pytest
import torch

from dms_test_utils import assert_exact_export, mmpretrain_classifier, search_and_export

SHAPE = (1, 3, 32, 32)


def tiny_revvit():
    torch.manual_seed(0)
    return mmpretrain_classifier(
        dict(type='RevVisionTransformer', img_size=32, patch_size=8,
             arch=dict(embed_dims=16, num_layers=2, num_heads=2, feedforward_channels=32)),
        in_channels=32, neck=None)


def _ratios_with_gradient(search, x, g):
    ratios = search.structure_parameters()
    out = search(x, mode='tensor')
    loss = (out * torch.randn(out.shape, generator=g)).sum()
    grads = torch.autograd.grad(loss, ratios, allow_unused=True)
    return len(ratios), sum(1 for gr in grads if gr is not None and bool((gr != 0).any()))


@pytest.mark.parametrize('seed', [0, 1])
def test_revvit_is_searched_and_exports_exactly(seed):
    search, subnet, static = search_and_export(tiny_revvit, SHAPE, seed=seed)
    space = search.space
    assert space.weight_coverage >= 0.9, space.unsearched_layers
    # one stream width: the embedding, both streams of every layer, the final norm over the
    # two concatenated streams and the head that reads them
    stream = [g for g in space.widths.values() if 'backbone.patch_embed.projection' in g.layers]
    assert len(stream) == 1
    assert {'backbone.layers.0.ln1', 'backbone.layers.1.ln2', 'backbone.ln1',
            'head.fc'} <= set(stream[0].layers)
    assert set(space.attentions) == {'backbone.layers.0.attn', 'backbone.layers.1.attn'}
    assert len(space.widths) == 1 + 2 + 2 * 3  # stream, FFN hidden, heads / qk / v dims
    assert_exact_export(search, subnet, static, SHAPE)

    # the static model keeps its reversible backward for retraining, and it runs pruned
    assert not static.architecture.backbone.no_custom_backward
    static.train()
    static(torch.randn(2, 3, 32, 32), mode='tensor').sum().backward()
    assert static.architecture.backbone.layers[0].ffn.layers[1].weight.grad is not None


def test_revvit_search_gives_every_ratio_a_gradient_in_training_mode():
    search, _, _ = search_and_export(tiny_revvit, SHAPE)
    search.train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn((2, ) + SHAPE[1:], generator=g)
    ratios, with_gradient = _ratios_with_gradient(search, x, g)
    assert ratios == 9 and with_gradient == ratios
    # why the search model runs the vanilla backward: through RevBackProp only the embedding's
    # ratio (read by the patch embedding and the head, outside it) gets one
    search.architecture.backbone.no_custom_backward = False
    assert _ratios_with_gradient(search, x, g)[1] < ratios
