# Copyright (c) mmdms contributors. All rights reserved.
"""Width masks applied by BatchNorm's affine parameters: which convs qualify, and the folded
model computes the same outputs, ratio gradients and Taylor statistics as the unfolded one."""
import copy

import pytest
import torch
import torch.fx
import torch.nn as nn
from mmrazor.registry import MODELS

import mmdms  # noqa: F401
from mmdms.models.mutators.norm_folding import norm_act_conv_chains


class Chains(nn.Module):
    """Each branch ends in a conv reading ``act(bn(...))`` of one kind."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.bn = nn.ModuleList(nn.BatchNorm2d(8) for _ in range(6))
        self.conv = nn.ModuleList(nn.Conv2d(8, 8, 1) for _ in range(6))
        self.other = nn.Conv2d(8, 8, 1)
        self.relu, self.silu, self.relu6 = nn.ReLU(inplace=True), nn.SiLU(), nn.ReLU6()

    def forward(self, x):
        x = self.stem(x)
        outs = [
            self.conv[0](self.relu(self.bn[0](x))),          # folds
            self.conv[1](self.bn[1](x)),                      # folds: no activation
            self.conv[2](torch.relu(self.bn[2](x))),          # folds: functional ReLU
            self.conv[3](self.silu(self.bn[3](x))),           # SiLU(m y) != m SiLU(y)
            self.conv[4](self.relu6(self.bn[4](x))),          # ReLU6 saturates: not homogeneous
        ]
        shared = self.relu(self.bn[5](x))                     # read by two layers
        outs += [self.conv[5](shared), self.other(shared)]
        return sum(outs)


def test_chains_are_the_positively_homogeneous_single_reader_ones():
    model = Chains()
    graph = torch.fx.symbolic_trace(model).graph
    assert norm_act_conv_chains(graph, model) == {
        'conv.0': 'bn.0', 'conv.1': 'bn.1', 'conv.2': 'bn.2'}


def _prepared_pair(model, input_shape):
    """The same model with and without folding, the same random soft structure."""
    pair = []
    for fold in (True, False):
        supernet = copy.deepcopy(model)
        mutator = MODELS.build(dict(
            _scope_='mmrazor', type='DMSMutator', fold_norm_masks=fold,
            parse_cfg=dict(type='ChannelAnalyzer', demo_input=input_shape,
                           tracer_type='FxTracer')))
        mutator.prepare_from_supernet(supernet)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for m in mutator.dms_mutables():
                m.importance.copy_(torch.rand(m.importance.shape, generator=g))
                m.dms_ratio.fill_(float(torch.rand(1, generator=g)) * 0.5)
        pair.append((supernet, mutator))
    return pair


def _step(model, mutator, x):
    model.train()
    y = model(x, mode='tensor')
    y.square().sum().backward()
    return (y.detach(), [m.dms_ratio.grad for m in mutator.dms_mutables()],
            [m.pop_mask_grad_statistic() for m in mutator.dms_mutables()])


@pytest.fixture
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def test_resnet_bottlenecks_fold_conv2_and_conv3_and_compute_the_same(float64):
    """mmpretrain's ResNet-50 (masks, weights, inputs) in float64, where rounding cannot hide
    a difference."""
    from mmpretrain import get_model
    torch.manual_seed(0)
    model = get_model('resnet50_8xb32_in1k', pretrained=False)
    (folded, folding), (plain, not_folding) = _prepared_pair(model, (1, 3, 64, 64))
    assert not_folding.folded_convs == []
    assert len(folding.folded_convs) == 32  # conv2 and conv3 of each of the 16 bottlenecks
    assert all(n.endswith(('.conv2', '.conv3')) for n in folding.folded_convs)
    modules = dict(folded.named_modules())
    assert modules['backbone.layer1.0.conv2'].fold_input_mask
    assert modules['backbone.layer1.0.bn1'].fold_output_mask
    assert not modules['backbone.layer1.0.conv1'].fold_input_mask  # reads the residual stream
    assert 'conv input mask(s) applied by their BatchNorm' in folding.summary()

    # train-mode BatchNorm over few values amplifies rounding: 4 images of 64 px
    x = torch.randn(4, 3, 64, 64, dtype=torch.float64)
    (y1, grads1, stats1), (y2, grads2, stats2) = _step(folded, folding, x), \
        _step(plain, not_folding, x)
    assert (y1 - y2).abs().max() <= 1e-10 * y2.abs().max()
    grads1, grads2 = torch.stack(grads1), torch.stack(grads2)
    assert (grads1 - grads2).abs().max() <= 1e-9 * grads2.abs().max()
    assert all(s is not None for s in stats1)
    for a, b in zip(stats1, stats2):
        assert (a - b).abs().max() <= 1e-9 * b.abs().max()
    # running statistics move the same way
    torch.testing.assert_close(modules['backbone.layer1.0.bn1'].running_var,
                               dict(plain.named_modules())['backbone.layer1.0.bn1'].running_var)


def test_swish_networks_keep_their_masks_on_the_convs():
    """EfficientNet's Swish is not positively homogeneous: only the two convs that read a
    BatchNorm without activation (a block output with no shortcut) fold."""
    from mmpretrain import get_model
    model = get_model('efficientnet-b0_3rdparty_8xb32_in1k', pretrained=False)
    (folded, folding), _ = _prepared_pair(model, (1, 3, 32, 32))
    assert sorted(folding.folded_convs) == ['backbone.layers.2.0.expand_conv.conv',
                                            'backbone.layers.6.conv']
