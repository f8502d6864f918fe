# Copyright (c) mmdms contributors. All rights reserved.
"""TNT (:mod:`mmdms.models.adapters.mmpretrain_tnt`): its layers are traced (their in-place
update of the patch tokens is not), its outer stream is searched through mmcv's
``MultiheadAttention`` (a ``torch.nn.MultiheadAttention`` inside), and the static model,
whose pruned attentions are :class:`PrunedTorchMultiheadAttention` s, is exact."""
import pytest
import torch

from dms_test_utils import assert_exact_export, mmpretrain_classifier, search_and_export

SHAPE = (1, 3, 32, 32)


def tiny_tnt():
    torch.manual_seed(0)
    return mmpretrain_classifier(
        dict(type='TNT', arch=dict(embed_dims_outer=32, embed_dims_inner=8, num_layers=2,
                                   num_heads_outer=2, num_heads_inner=2),
             img_size=32, patch_size=8, first_stride=4), in_channels=32, neck=None)


@pytest.mark.parametrize('seed', [0, 1])
def test_tnt_outer_stream_is_searched_and_exports_exactly(seed):
    search, subnet, static = search_and_export(tiny_tnt, SHAPE, seed=seed)
    from mmdms.models.layer_rules import PrunedTorchMultiheadAttention
    space = search.space
    assert space.weight_coverage >= 0.9, space.unsearched_layers
    streams = [group for key, group in space.widths.items() if not key.endswith('.heads')
               and 'backbone.layers.1.outer_block.attn.attn' in group.layers]
    assert len(streams) == 1 and 'head.fc' in streams[0].layers  # the outer stream
    assert streams[0].mutable.activated_channels < 32
    attn = static.architecture.backbone.layers[1].outer_block.attn.attn
    assert isinstance(attn, PrunedTorchMultiheadAttention)
    assert attn.in_proj_weight.shape[1] == attn.out_proj.out_features == \
        streams[0].mutable.activated_channels
    assert_exact_export(search, subnet, static, SHAPE)


def test_tnt_heads_are_searched_and_export_exactly():
    """Every ``torch.nn.MultiheadAttention`` of TNT (outer and inner) loses a head: its
    ``in_proj_weight`` rows and biases masked in the search, sliced at export."""
    from mmdms.models.layer_rules import PrunedTorchMultiheadAttention

    def one_head_fewer(search):
        for attention in search.space.attentions.values():
            attention.heads.set_kept(attention.heads.num_elements - 1)

    search, subnet, static = search_and_export(tiny_tnt, SHAPE, seed=2,
                                               structure=one_head_fewer)
    names = [n for n, m in tiny_tnt().named_modules() if type(m) is torch.nn.MultiheadAttention]
    assert sorted(subnet['attentions']) == sorted(names) and len(names) == 4
    for name in names:
        attn = static.architecture.get_submodule(name)
        assert isinstance(attn, PrunedTorchMultiheadAttention) and attn.num_heads == 1
        assert attn.in_proj_weight.shape[0] == 3 * attn.head_dim
        assert attn.out_proj.weight.shape[1] == attn.head_dim
    assert_exact_export(search, subnet, static, SHAPE)
