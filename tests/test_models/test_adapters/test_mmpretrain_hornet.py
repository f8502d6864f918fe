# Copyright (c) mmdms contributors. All rights reserved.
"""HorNet's streams are searched through its LayerNorms and its ``gnConv`` (a leaf whose input
and output are the stream: ``proj_in``'s input and ``proj_out``'s output), the build failed
before at the gnConv's split; a small real HorNet with global filters (one of them interpolating
its weight) exports exactly, and its MACs equal FlopAnalyzer's."""
import pytest
import torch

from dms_test_utils import assert_exact_export, mmpretrain_classifier, search_and_export

SHAPE = (1, 3, 64, 64)


def tiny_hornet():
    torch.manual_seed(0)
    return mmpretrain_classifier(dict(type='HorNet', arch=dict(
        base_dim=16, depths=[1, 2, 1, 1], orders=[2, 3, 4, 5],
        # stage 2 (4x4) filters at its weight's size, stage 3 (2x2) interpolates a 3x3 weight
        dw_cfg=[dict(type='DW', kernel_size=7)] * 2 + [dict(type='GF', h=4, w=3),
                                                        dict(type='GF', h=3, w=3)])),
        in_channels=128, neck=None)


@pytest.mark.parametrize('seed', [0, 1])
def test_hornet_streams_are_searched_through_gnconv_and_export_exactly(seed):
    from mmdms.utils import count_macs
    search, subnet, static = search_and_export(tiny_hornet, SHAPE, seed=seed)
    space = search.space
    # only the gnConvs' order widths stay: dwconv (its global filter) and the recursive projs
    assert space.unsearched_layers and all(
        '.gnconv.' in n and '.proj_in' not in n and '.proj_out' not in n
        for n in space.unsearched_layers)
    assert space.weight_coverage >= 0.9
    for stage, dim in enumerate((16, 32, 64, 128)):
        gnconv = f'backbone.stages.{stage}.0.gnconv'
        group = next(g for g in space.widths.values() if f'{gnconv}.proj_in' in g.layers)
        assert f'{gnconv}.proj_out' in group.layers and group.mutable.num_channels == dim
    # the supernet's count includes the global filter's weight interpolation, as FlopAnalyzer's
    assert subnet['supernet']['macs'] == count_macs(tiny_hornet(), SHAPE)
    assert_exact_export(search, subnet, static, SHAPE)
    pruned = static.architecture.backbone.stages[3][0]
    assert pruned.gnconv.proj_in.in_channels == pruned.gnconv.proj_out.out_channels == \
        pruned.norm1.normalized_shape[0] < 128
