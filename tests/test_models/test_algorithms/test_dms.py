# Copyright (c) mmdms contributors. All rights reserved.
"""The DMS algorithm: resource loss (Eq. 7), its straight-through variant, the three pipelines."""
import math

import pytest
import torch
import mmdms  # noqa: F401  (compat shims before mmrazor)
from mmpretrain.structures import DataSample
from mmrazor.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm


def build_dms(**kwargs):
    torch.manual_seed(0)
    return MODELS.build(dict(
        _scope_='mmrazor', type='DMS',
        architecture=dict(
            _scope_='mmpretrain', type='ImageClassifier',
            backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=16, base_channels=16),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=10, in_channels=128),
            data_preprocessor=dict(num_classes=10, mean=[0.] * 3, std=[1.] * 3)),
        mutator=dict(type='DMSMutator', parse_cfg=dict(
            type='ChannelAnalyzer', demo_input=(1, 3, 16, 16), tracer_type='FxTracer')),
        **kwargs))


def batch(n=4):
    inputs = torch.randn(n, 3, 16, 16)
    samples = [DataSample().set_gt_label(i % 10) for i in range(n)]
    return inputs, samples


def test_resource_loss_is_log_ratio_above_target_and_zero_below():
    model = build_dms()
    inputs, samples = batch()
    assert 'loss_resource' not in model.loss(inputs, samples)  # no target yet
    soft = model.estimator.estimate('macs').item()
    model.set_resource_constraint('macs', soft / 2, lambda_resource=2.0)
    losses = model.loss(inputs, samples)
    assert losses['loss_resource'].item() == pytest.approx(2.0 * math.log(2.0), rel=1e-4)
    assert losses['r_c'].item() == pytest.approx(soft * 1e-6, rel=1e-5)
    assert losses['r_t'].item() == pytest.approx(soft / 2 * 1e-6, rel=1e-5)
    losses['loss_resource'].backward()
    for m in model.dms_mutables():
        assert m.dms_ratio.grad is not None and m.dms_ratio.grad.item() < 0  # descent shrinks

    model.set_resource_constraint('macs', soft * 2)
    below = model.loss(inputs, samples)['loss_resource']
    assert below.item() == 0 and below.requires_grad
    model.resource_two_sided = True
    assert model.loss(inputs, samples)['loss_resource'].item() == \
        pytest.approx(math.log(2.0), rel=1e-4)


def test_hard_resource_value_is_the_exported_count_with_soft_gradient():
    model = build_dms(resource_value='hard')
    full = model.supernet_resource('macs')
    model.set_resource_constraint('macs', full / 3)
    losses = model.loss(*batch())
    assert losses['r_c'].item() == pytest.approx(full * 1e-6, rel=1e-6)  # all kept
    losses['loss_resource'].backward()
    assert all(m.dms_ratio.grad.item() < 0 for m in model.dms_mutables())


@pytest.mark.parametrize('kwargs, message', [
    (dict(resource='energy', target=1.0), "Unknown resource type 'energy'"),
    (dict(resource='macs', target=0.0), 'must be positive'),
])
def test_bad_constraint(kwargs, message):
    model = build_dms()
    with pytest.raises(ValueError, match=message):
        model.set_resource_constraint(**kwargs)


def test_dms_p_minus_trains_only_the_structure():
    model = build_dms(freeze_weights=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith('dms_ratio') for n in trainable)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert bns and not any(bn.training for bn in bns)
    stats = [bn.running_mean.clone() for bn in bns]
    model.set_resource_constraint('macs', model.supernet_resource('macs') / 2)
    model.loss(*batch())['loss_resource'].backward()
    assert all(torch.equal(s, bn.running_mean) for s, bn in zip(stats, bns))
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)

    searched = build_dms()  # DMS_np / DMS_p: everything trains, BN statistics update
    searched.train()
    assert all(p.requires_grad for p in searched.parameters() if p.numel() > 1)
    assert all(m.training for m in searched.modules() if isinstance(m, _BatchNorm))


def test_load_from_a_plain_supernet_checkpoint_loads_every_weight(tmp_path):
    """DMS_p: ``load_from`` a checkpoint of the plain supernet (``backbone.…`` keys) through
    mmengine's loader, as the Runner does; a search-model checkpoint still loads as it is."""
    from mmengine.runner.checkpoint import load_checkpoint
    model = build_dms()
    torch.manual_seed(1)
    plain = MODELS.build(dict(model._architecture_cfg, _scope_='mmpretrain'))
    with torch.no_grad():
        for p in plain.parameters():
            p.normal_()
    torch.save(dict(state_dict=plain.state_dict()), tmp_path / 'supernet.pth')
    # non-strict, as the Runner's load_from: the checkpoint has no structure parameters
    load_checkpoint(model, str(tmp_path / 'supernet.pth'), map_location='cpu', strict=False)
    loaded = model.architecture.state_dict()
    for key, value in plain.state_dict().items():
        assert torch.equal(loaded[key], value), key

    torch.save(dict(state_dict=model.state_dict()), tmp_path / 'search.pth')
    again = build_dms()
    load_checkpoint(again, str(tmp_path / 'search.pth'), map_location='cpu', strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
