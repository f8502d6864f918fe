# Copyright (c) mmdms contributors. All rights reserved.
"""Width masks applied by BatchNorm's affine parameters: which convs qualify (single chains and
residual streams), and the folded model computes the same outputs, ratio gradients and Taylor
statistics as the unfolded one."""
import copy

import pytest
import torch
import torch.fx
import torch.nn as nn
from mmrazor.registry import MODELS

import mmdms  # noqa: F401
from mmdms.models.mutators.norm_folding import norm_streams


class Chains(nn.Module):
    """Each branch ends in a conv reading ``act(bn(...))`` of one kind, then a residual stream."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.bn = nn.ModuleList(nn.BatchNorm2d(8) for _ in range(11))
        self.conv = nn.ModuleList(nn.Conv2d(8, 8, 1) for _ in range(10))
        self.other = nn.Conv2d(8, 8, 1)
        self.relu, self.silu, self.relu6 = nn.ReLU(inplace=True), nn.SiLU(), nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x)
        outs = [
            self.conv[0](self.relu(self.bn[0](x))),          # folds
            self.conv[1](self.bn[1](x)),                      # folds: no activation
            self.conv[2](torch.relu(self.bn[2](x))),          # folds: functional ReLU
            self.conv[3](self.silu(self.bn[3](x))),           # SiLU(m y) != m SiLU(y)
            self.conv[4](self.relu6(self.bn[4](x))),          # ReLU6 saturates: not homogeneous
        ]
        shared = self.relu(self.bn[5](x))                     # read by two convs: folds
        outs += [self.conv[5](shared), self.other(shared)]
        # a residual stream: two BatchNorms summed, read by a conv and, pooled, by a linear
        stream = self.relu(self.bn[6](x) + self.bn[7](x))
        stream = self.relu(stream + self.bn[8](self.conv[6](stream)))
        outs.append(self.conv[7](stream))
        # a stream that is also scaled by a constant: a sum with a non-stream tensor, refused
        outs.append(self.conv[8](self.relu(self.bn[9](x) + x)))
        outs.append(self.conv[9](self.relu(self.bn[10](x) + 1.0)))  # m y + 1 != m (y + 1)
        return sum(o.mean() for o in outs) + self.fc(self.pool(stream).flatten(1)).sum()


def test_streams_are_the_positively_homogeneous_ones_read_by_convs_and_linears_only():
    model = Chains()
    graph = torch.fx.symbolic_trace(model).graph
    assert sorted(norm_streams(graph, model)) == [
        (['bn.0'], ['conv.0']), (['bn.1'], ['conv.1']), (['bn.2'], ['conv.2']),
        (['bn.5'], ['conv.5', 'other']), (['bn.6', 'bn.7', 'bn.8'], ['conv.6', 'conv.7', 'fc'])]


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


def _assert_same_step(folded, folding, plain, not_folding, x):
    (y1, grads1, stats1), (y2, grads2, stats2) = _step(folded, folding, x), \
        _step(plain, not_folding, x)
    assert (y1 - y2).abs().max() <= 1e-10 * y2.abs().max()
    # the soft masks are float32 (from the float32 importance buffers), so their gradients, and
    # the ratios' and statistics' computed from them, agree to float32 rounding: the folded
    # model sums the same terms in another order
    grads1, grads2 = torch.stack(grads1), torch.stack(grads2)
    assert (grads1 - grads2).abs().max() <= 1e-6 * grads2.abs().max()
    assert all(s is not None for s in stats1)
    for a, b in zip(stats1, stats2):
        assert (a - b).abs().max() <= 1e-6 * b.abs().max()


def test_resnet_bottlenecks_fold_conv2_and_conv3_and_compute_the_same(float64):
    """mmpretrain's ResNet-50 (masks, weights, inputs) in float64, where rounding cannot hide
    a difference."""
    from mmpretrain import get_model
    torch.manual_seed(0)
    model = get_model('resnet50_8xb32_in1k', pretrained=False)
    (folded, folding), (plain, not_folding) = _prepared_pair(model, (1, 3, 64, 64))
    assert not_folding.folded_convs == []
    # conv2 and conv3 of each of the 16 bottlenecks (one BatchNorm each), and the readers of
    # the stem and of the four residual streams: 16 conv1, 4 downsample convs and the classifier
    assert len(folding.folded_convs) == 32 + 21
    modules = dict(folded.named_modules())
    assert modules['backbone.layer1.0.conv2'].fold_input_mask
    assert modules['backbone.layer1.0.bn1'].fold_output_mask
    assert modules['backbone.layer1.1.conv1'].fold_input_mask  # reads the residual stream
    assert modules['backbone.layer1.0.bn3'].fold_output_mask
    assert modules['backbone.layer1.0.downsample.1'].fold_output_mask
    assert modules['head.fc'].fold_input_mask
    assert 'conv input mask(s) applied by their BatchNorm' in folding.summary()

    # train-mode BatchNorm over few values amplifies rounding: 4 images of 64 px
    _assert_same_step(folded, folding, plain, not_folding, torch.randn(4, 3, 64, 64))
    # running statistics move the same way
    torch.testing.assert_close(modules['backbone.layer1.0.bn1'].running_var,
                               dict(plain.named_modules())['backbone.layer1.0.bn1'].running_var)


def test_swish_networks_fold_only_their_residual_streams(float64):
    """EfficientNet's Swish is not positively homogeneous: what folds is the streams of its
    stages (the project convs' BatchNorms, no activation, summed with the shortcut) and the one
    block output without a shortcut that a conv reads; every Swish-fed conv keeps its mask."""
    from mmpretrain import get_model
    torch.manual_seed(0)
    model = get_model('efficientnet-b0_3rdparty_8xb32_in1k', pretrained=False)
    (folded, folding), (plain, not_folding) = _prepared_pair(model, (1, 3, 32, 32))
    expand = {2: (0, 1), 3: (0, 1), 4: range(6), 5: range(5)}
    assert sorted(folding.folded_convs) == sorted(
        [f'backbone.layers.{s}.{b}.expand_conv.conv' for s, blocks in expand.items()
         for b in blocks] + ['backbone.layers.6.conv'])
    _assert_same_step(folded, folding, plain, not_folding, torch.randn(4, 3, 32, 32))
