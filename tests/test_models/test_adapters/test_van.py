# Copyright (c) mmdms contributors. All rights reserved.
"""VAN's forward reshapes each stage to its blocks' built width: with the adapter its streams are
searched (they failed MMRazor's pruning check and stayed fixed) and a small real VAN exports
exactly, its blocks' ``out_channels`` those of the pruned stages."""
import pytest
import torch

from dms_test_utils import assert_exact_export, mmpretrain_classifier, search_and_export

SHAPE = (1, 3, 32, 32)


def tiny_van():
    torch.manual_seed(0)
    return mmpretrain_classifier(
        dict(type='VAN', arch=dict(embed_dims=[8, 16], depths=[2, 2], ffn_ratios=[2, 2]),
             out_indices=(1, )), in_channels=16)


@pytest.mark.parametrize('seed', [0, 1])
def test_van_streams_are_searched_and_export_exactly(seed):
    search, subnet, static = search_and_export(tiny_van, SHAPE, seed=seed)
    assert search.space.weight_coverage == 1.0, search.space.unsearched_layers
    assert any('backbone.patch_embed2.projection' in g.layers
               for g in search.space.widths.values())
    assert_exact_export(search, subnet, static, SHAPE)
    backbone = static.architecture.backbone
    for i in (1, 2):
        width = getattr(backbone, f'norm{i}').normalized_shape[-1]
        assert all(block.out_channels == width for block in getattr(backbone, f'blocks{i}'))


def test_the_model_forward_is_unchanged_by_the_trace_forward():
    from mmdms.models.adapters.mmpretrain_van import VANAdapter
    model = tiny_van()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model.backbone(x)
        traced = VANAdapter().trace_forward(model.backbone, x)
    torch.testing.assert_close(traced, expected)
