# Copyright (c) mmdms contributors. All rights reserved.
"""Depth found from the graph in real OpenMMLab families that no adapter names (ConvNeXt,
PoolFormer, Swin, mmdet's ResNet, MViT-V2, whose blocks return ``(x, out_size)``), and the
export of a subnet that removes blocks of each: static outputs equal to the hard-masked search
model's, MACs equal to FlopAnalyzer's."""
import pytest
import torch
from mmengine.config import Config

from mmdms.apis import (build_search_model, hard_mask_difference, set_random_structure,
                        static_subnet)
from mmdms.structures import subnet_from_algorithm
from mmdms.structures.subnet_spec import removed_blocks, tuple_blocks
from mmdms.utils import count_macs

SIZE = 32


def classifier(backbone, channels, pool=True):
    return dict(_scope_='mmpretrain', type='ImageClassifier', backbone=backbone,
                neck=dict(type='GlobalAveragePooling') if pool else None,
                head=dict(type='LinearClsHead', num_classes=10, in_channels=channels))


# name -> (architecture, {stage: blocks})
MODELS = {
    'convnext': (classifier(dict(type='ConvNeXt', arch=dict(depths=[2, 3], channels=[8, 16]),
                                 out_indices=(1, ), layer_scale_init_value=0.5), 16,
                            pool=False),
                 {'backbone.stages.0.0-1': 2, 'backbone.stages.1.0-2': 3}),
    'poolformer': (classifier(dict(type='PoolFormer', arch=dict(
        layers=[2, 3], embed_dims=[8, 16], mlp_ratios=[2, 2], layer_scale_init_value=0.5),
        out_indices=(2, )), 16),
        {'backbone.network.0.0-1': 2, 'backbone.network.2.0-2': 3}),
    'swin': (classifier(dict(type='SwinTransformer', arch=dict(
        embed_dims=16, depths=[2, 2], num_heads=[1, 2]), img_size=SIZE, window_size=4,
        out_indices=(1, ), drop_path_rate=0.), 32),
        {'backbone.stages.0.blocks.0-1': 2, 'backbone.stages.1.blocks.0-1': 2}),
    # post-activation blocks, relu(x + f(x)); the first of layer2 has a projection shortcut
    'mmdet_resnet': (classifier(dict(type='mmdet.ResNet', depth=18, base_channels=8,
                                     num_stages=2, strides=(1, 2), dilations=(1, 1),
                                     out_indices=(1, )), 16),
                     {'backbone.layer1.0-1': 2, 'backbone.layer2.1-1': 1}),
    # blocks return (x, out_size); the stride-2 block 2 (which doubles the dims) is no stage's
    'mvit': (classifier(dict(type='MViT', arch=dict(embed_dims=16, num_layers=5, num_heads=1,
                                                    downscale_indices=[2]),
                             img_size=SIZE, out_scales=(1, )), 32),
             {'backbone.blocks.0-1': 2, 'backbone.blocks.3-4': 2}),
}


def search_cfg(architecture):
    return Config(dict(model=dict(
        _scope_='mmrazor', type='DMS', architecture=architecture,
        mutator=dict(type='DMSMutator', parse_cfg=dict(
            type='ChannelAnalyzer', demo_input=(1, 3, SIZE, SIZE), tracer_type='FxTracer')))))


@pytest.fixture(scope='module', params=sorted(MODELS))
def searched(request):
    import mmdet.models  # noqa: F401  (registers mmdet's ResNet for 'mmdet.ResNet')
    architecture, stages = MODELS[request.param]
    cfg = search_cfg(architecture)
    torch.manual_seed(0)
    return request.param, cfg, build_search_model(cfg).eval(), stages


def test_depth_is_found_without_an_adapter(searched):
    _, _, model, stages = searched
    assert {k: len(s.blocks) for k, s in model.space.stages.items()} == stages
    assert set(model.mutator.graph_blocks) == {b for s in model.space.stages.values()
                                               for b in s.blocks}


def test_every_depth_ratio_gets_a_gradient(searched):
    _, _, model, _ = searched
    g = torch.Generator().manual_seed(1)
    set_random_structure(model, g)
    out = model(torch.randn(2, 3, SIZE, SIZE, generator=g), mode='tensor')
    (out * torch.randn(out.shape, generator=g)).sum().backward()
    for key, stage in model.space.stages.items():
        grad = stage.mutable.dms_ratio.grad
        assert grad is not None and grad != 0, key
    model.zero_grad(set_to_none=True)


def test_removing_blocks_exports_exactly(searched):
    name, cfg, model, _ = searched
    g = torch.Generator().manual_seed(2)
    set_random_structure(model, g)
    for stage in model.space.stages.values():  # one block fewer than all, at least
        mutable = stage.mutable
        mutable.set_kept(max(mutable.min_elements, mutable.num_elements - 1))
    subnet = subnet_from_algorithm(model)
    assert removed_blocks(subnet)
    if name == 'mvit':  # a removed block's stand-in returns (x, out_size)
        assert set(tuple_blocks(subnet)) == set(model.mutator.graph_blocks)
    static = static_subnet(model, cfg, subnet)
    assert hard_mask_difference(model, static, subnet['input_shape']) <= 1e-4
    assert count_macs(static, subnet['input_shape']) == pytest.approx(subnet['macs'], rel=1e-6)


def test_split_and_concat_blocks_are_not_identity_residual():
    """ShuffleNet-v2's stride-1 blocks split the channels and concatenate a branch with the
    untouched half: no addition, so no depth to search."""
    cfg = search_cfg(classifier(dict(type='ShuffleNetV2', widen_factor=0.5), 1024))
    model = build_search_model(cfg)
    assert not model.space.stages and not model.mutator.graph_blocks
