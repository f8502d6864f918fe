# Copyright (c) mmdms contributors. All rights reserved.
"""DaViT (:mod:`mmdms.models.adapters.mmpretrain_davit`): its streams are searched through both
attentions and the down-sampling, and a structure with odd stream widths (which DaViT's
token padding would have padded) exports exactly."""
import pytest
import torch

from dms_test_utils import (assert_exact_export, mmpretrain_classifier, randomize_structure,
                             search_and_export)
from mmdms.models import DMS, DMSSubnet
from mmdms.structures import subnet_from_algorithm
from mmdms.utils import load_state_dict_strictly

SHAPE = (1, 3, 64, 64)


def tiny_davit():
    torch.manual_seed(0)
    return mmpretrain_classifier(
        dict(type='DaViT', arch=dict(embed_dims=16, depths=[1, 1], num_heads=[2, 4]),
             window_size=4, out_indices=(1, )), in_channels=32)


@pytest.mark.parametrize('seed', [0, 1])
def test_davit_streams_are_searched_and_odd_widths_export_exactly(seed):
    search = DMS(tiny_davit(), mutator=dict(type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=SHAPE, tracer_type='FxTracer')))
    space = search.space
    assert space.weight_coverage >= 0.9, space.unsearched_layers
    streams = [group.mutable for group in space.widths.values()
               if 'backbone.stages.0.downsample.norm' in group.layers]
    assert len(streams) == 1  # stage 0's stream, read by the down-sampling
    randomize_structure(search.eval(), seed=seed)
    streams[0].set_kept(15)  # odd: the tokens' padding would make it 16
    subnet = subnet_from_algorithm(search)
    architecture = tiny_davit()
    load_state_dict_strictly(architecture, search.architecture.state_dict())
    static = DMSSubnet(architecture, subnet).eval()
    assert static.architecture.backbone.stages[0].downsample.norm.normalized_shape == (15, )
    assert_exact_export(search, subnet, static, SHAPE)


@pytest.mark.parametrize('seed', [0, 1])
def test_davit_window_attention_heads_are_searched_and_export_exactly(seed):
    from mmpretrain.models.backbones.davit import DaViTWindowMSA
    search, subnet, static = search_and_export(tiny_davit, SHAPE, seed=seed)
    windows = [name for name, module in search.architecture.named_modules()
               if isinstance(module, DaViTWindowMSA)]
    assert windows and set(windows) <= set(search.space.attentions)
    pruned_heads = [subnet['attentions'][name]['heads']['kept'] for name in windows]
    assert all(1 <= kept <= search.architecture.get_submodule(name).num_heads
               for name, kept in zip(windows, pruned_heads))
    for name in windows:
        spec = subnet['attentions'][name]
        attn = static.architecture.get_submodule(name)
        assert (attn.num_heads, attn.qk_dims, attn.v_dims) == (
            spec['heads']['kept'], spec['qk_dims']['kept'], spec['v_dims']['kept'])
    assert_exact_export(search, subnet, static, SHAPE)
