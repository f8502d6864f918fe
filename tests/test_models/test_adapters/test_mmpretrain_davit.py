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


def one_head_fewer(search):
    for attention in search.space.attentions.values():
        attention.heads.set_kept(attention.heads.num_elements - 1)


@pytest.mark.parametrize('seed', [0, 1])
def test_davit_attention_heads_are_searched_and_export_exactly(seed):
    from mmpretrain.models.backbones.davit import ChannelAttention, DaViTWindowMSA
    search, subnet, static = search_and_export(tiny_davit, SHAPE, seed=seed,
                                               structure=one_head_fewer)
    windows = [name for name, module in search.architecture.named_modules()
               if isinstance(module, DaViTWindowMSA)]
    channels = [name for name, module in search.architecture.named_modules()
                if isinstance(module, ChannelAttention)]
    assert windows and channels
    assert set(windows + channels) == set(search.space.attentions)
    assert all(subnet['attentions'][name]['heads']['kept'] ==
               search.architecture.get_submodule(name).num_heads - 1
               for name in windows + channels)
    for name in windows:
        spec = subnet['attentions'][name]
        attn = static.architecture.get_submodule(name)
        assert (attn.num_heads, attn.qk_dims, attn.v_dims) == (
            spec['heads']['kept'], spec['qk_dims']['kept'], spec['v_dims']['kept'])
    for name in channels:  # heads searched, dims kept
        spec, full = subnet['attentions'][name], search.architecture.get_submodule(name)
        attn = static.architecture.get_submodule(name)
        assert attn.num_heads == spec['heads']['kept']
        assert spec['qk_dims']['kept'] == spec['qk_dims']['total']
        assert attn.qkv.out_features == 3 * attn.num_heads * full.qkv.out_features // (
            3 * full.num_heads)
    assert_exact_export(search, subnet, static, SHAPE)
