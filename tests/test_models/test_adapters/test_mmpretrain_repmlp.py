# Copyright (c) mmdms contributors. All rights reserved.
"""RepMLPNet's streams are searched through ``RepMLPBlock``'s partition perceptron (they were tied
to the model's input): a small real RepMLPNet exports exactly, its MACs (``fc3`` runs once per
row of channels) equal FlopAnalyzer's, each stream keeps whole blocks of its sharesets, and the
pruned static model still converts to its deploy form."""
import pytest
import torch

from dms_test_utils import assert_exact_export, mmpretrain_classifier, search_and_export

SHAPE = (1, 3, 16, 16)


def tiny_repmlp():
    torch.manual_seed(0)
    return mmpretrain_classifier(
        dict(type='RepMLPNet', arch=dict(channels=[16, 32], depths=[2, 2], sharesets_nums=[2, 4]),
             img_size=16, reparam_conv_kernels=(1, 3), out_indices=(1, )), in_channels=32)


def _partition_layers(model):
    return sorted(n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and
                  ('.fc3' in n or '.repconv' in n))


@pytest.mark.parametrize('seed', [0, 1])
def test_repmlp_streams_are_searched_and_export_exactly(seed):
    search, subnet, static = search_and_export(tiny_repmlp, SHAPE, seed=seed)
    space = search.space
    # only the partition perceptrons' convs stay: their weights are indexed by sharesets and
    # positions, not channels (with 4x4 and 2x2 partitions here they are a few % of the weights)
    assert sorted(space.unsearched_layers) == _partition_layers(search.architecture)
    assert space.weight_coverage >= 0.9
    for stream, sharesets in (('backbone.stages.0.0.norm1', 2), ('backbone.stages.1.0.norm1', 4)):
        group = next(g for g in space.widths.values() if stream in g.layers)
        assert group.mutable.step % sharesets == 0
    assert_exact_export(search, subnet, static, SHAPE)
    for stage, sharesets in zip(static.architecture.backbone.stages, (2, 4)):
        for unit in stage:
            if hasattr(unit, 'repmlp_block'):  # not removed by the depth search
                assert unit.repmlp_block.channels == unit.norm1.num_features
                assert unit.repmlp_block.channels % sharesets == 0


def test_the_pruned_model_converts_to_its_deploy_form():
    search, subnet, static = search_and_export(tiny_repmlp, SHAPE, seed=1)
    assert subnet['macs'] < subnet['supernet']['macs']
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = static.architecture(x, mode='tensor')
        static.architecture.backbone.switch_to_deploy()
        deployed = static.architecture(x, mode='tensor')
    torch.testing.assert_close(deployed, expected, rtol=1e-4, atol=1e-4 * expected.abs().max())


def test_the_traced_forwards_compute_the_unit():
    from mmdms.models.adapters.mmpretrain_repmlp import (RepMLPBlockAdapter,
                                                         RepMLPNetUnitAdapter)
    unit = tiny_repmlp().backbone.stages[1][0]
    x = torch.randn(2, 32, 2, 2)
    with torch.no_grad():
        expected = unit(x)
        block = unit.repmlp_block
        partitions = RepMLPBlockAdapter().trace_forward(block, x)
        torch.testing.assert_close(partitions * block.gp(x), block(x))
        block.forward = lambda inputs: RepMLPBlockAdapter().trace_forward(block, inputs)
        traced = RepMLPNetUnitAdapter().trace_forward(unit, x)
    torch.testing.assert_close(traced, expected)
