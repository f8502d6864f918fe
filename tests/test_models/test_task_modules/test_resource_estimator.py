# Copyright (c) mmdms contributors. All rights reserved.
"""DMSResourceEstimator against hand counts (soft and hard masks) and mmengine's FlopAnalyzer."""
import copy
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer
from mmrazor.registry import MODELS

from mmdms.models.task_modules import DMSResourceEstimator
from mmdms.utils import count_macs, count_params

from dms_test_utils import build_search_model, randomize_structure


def prepare(model, size, **mutator_args):
    mutator = MODELS.build(dict(_scope_='mmrazor', type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=(1, 3, size, size), tracer_type='FxTracer'),
        **mutator_args))
    mutator.prepare_from_supernet(model)
    estimator = DMSResourceEstimator((1, 3, size, size))
    forward = None if hasattr(model, 'data_preprocessor') else (lambda m, x: m(x))
    estimator.prepare(model, mutator.space, forward)
    return mutator, estimator


def flops(model, size):
    analyzer = FlopAnalyzer(model.eval(), (torch.zeros(1, 3, size, size), ))
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    return analyzer.total()


def randomize(mutables, generator):
    """Random importance and a random number of kept elements for every mutable."""
    for m in mutables:
        m.importance.copy_(torch.rand(m.num_elements, generator=generator))
        kept = int(torch.randint(m.min_elements, m.num_elements + 1, (1, ),
                                 generator=generator))
        m.set_kept(max(kept, 1) if m.min_elements == 0 else kept)
        with torch.no_grad():  # off the midpoint, so soft masks are not all polarised
            m.dms_ratio.add_(0.3 / m.num_elements)
            m.project_ratio()


class DepthwiseModel(nn.Module):
    """conv -> BN -> depthwise conv -> BN -> 1x1 conv -> BN -> pool -> linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 12, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(12)
        self.head = nn.Linear(12, 4)

    def forward(self, x):
        x = torch.relu(self.bn2(self.dw(torch.relu(self.bn1(self.stem(x))))))
        return self.head(torch.relu(self.bn3(self.pw(x))).mean(dim=(2, 3)))


def test_full_count_equals_flop_analyzer_on_depthwise_and_grouped_models():
    class Grouped(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 12, 3, padding=1)
            self.grouped = nn.Conv2d(12, 24, 3, padding=1, groups=3)
            self.head = nn.Linear(24, 4)

        def forward(self, x):
            return self.head(self.grouped(torch.relu(self.stem(x))).mean(dim=(2, 3)))

    for cls in (DepthwiseModel, Grouped):
        model = cls()
        reference = copy.deepcopy(model)
        _, estimator = prepare(model, 16)
        params = sum(p.numel() for p in reference.parameters())
        assert estimator.estimate('macs', hard=True).item() == pytest.approx(flops(reference, 16))
        assert estimator.estimate('macs', full=True).item() == pytest.approx(flops(reference, 16))
        assert estimator.estimate('params', hard=True).item() == params


@pytest.mark.parametrize('hard', [True, False])
def test_depthwise_model_counts_by_hand(hard):
    torch.manual_seed(0)
    model = DepthwiseModel()
    mutator, estimator = prepare(model, 16)
    randomize(mutator.dms_mutables(), torch.Generator().manual_seed(1))
    groups = {unit.name.split('_')[0]: unit.mutable_channel for unit in mutator.mutable_units}
    k1, k2 = ((groups[n].hard_mask if hard else groups[n].soft_mask).sum()
              for n in ('stem', 'pw'))
    hw = 16 * 16
    # depthwise: 9 * C, not 9 * C^2; BN (eval): 2 per element; linear: in * out
    macs = 27 * k1 * hw + 2 * k1 * hw + 9 * k1 * hw + 2 * k1 * hw + k1 * k2 * hw + \
        2 * k2 * hw + k2 * 4
    params = 27 * k1 + k1 + 2 * k1 + 9 * k1 + 2 * k1 + k1 * k2 + 2 * k2 + 4 * k2 + 4
    assert estimator.macs(hard).item() == pytest.approx(macs.item(), rel=1e-5)
    assert estimator.params(hard).item() == pytest.approx(params.item(), rel=1e-5)
    if hard:
        assert groups['stem'].num_kept < 8 or groups['pw'].num_kept < 12


def test_soft_count_is_differentiable_in_every_ratio():
    model = DepthwiseModel()
    mutator, estimator = prepare(model, 16)
    randomize(mutator.dms_mutables(), torch.Generator().manual_seed(2))
    estimator.macs().backward()
    for m in mutator.dms_mutables():
        assert m.dms_ratio.grad is not None and m.dms_ratio.grad < 0


def small_vit():
    return MODELS.build(dict(
        _scope_='mmpretrain', type='ImageClassifier',
        backbone=dict(type='VisionTransformer', img_size=16, patch_size=4,
                      arch=dict(embed_dims=24, num_layers=2, num_heads=3,
                                feedforward_channels=40)),
        neck=None,
        head=dict(type='VisionTransformerClsHead', num_classes=5, in_channels=24)))


@pytest.mark.parametrize('hard', [True, False])
def test_attention_counts_by_hand(hard):
    torch.manual_seed(0)
    model = small_vit()
    mutator, estimator = prepare(model, 16)
    randomize(mutator.dms_mutables(), torch.Generator().manual_seed(3))

    def width(key):
        m = mutator.structured_mutables[key.replace('.', '__')]
        return (m.hard_mask if hard else m.soft_mask).sum()

    tokens = (16 // 4) ** 2 + 1
    e = width('backbone.embed')
    macs = 16 * 3 * 16 * e + e * 5  # patch conv (4x4 kernel, 16 positions); head linear
    params = 16 * 3 * e + e + tokens * e + e + e * 5 + 5  # conv, pos_embed, cls, head
    stage, = mutator.stage_mutables.values()
    depth = stage.element_hard_mask() if hard else stage.block_masks  # a block: one layer
    for i in range(2):
        h, qk, v, hidden = (width(f'backbone.layers.{i}.{k}') for k in
                            ('attn.heads', 'attn.qk_dims', 'attn.v_dims', 'ffn.hidden'))
        qkv_out = h * (2 * qk + v)
        macs = macs + depth[i] * (
            tokens * (2 * 5 * e + e * qkv_out + h * v * e + 2 * e * hidden) +
            h * (qk + v) * tokens ** 2)
        params = params + depth[i] * (2 * 2 * e + e * qkv_out + qkv_out + h * v * e + e +
                                      2 * e * hidden + hidden + e)
    macs = macs + 5 * tokens * e  # final LayerNorm
    params = params + 2 * e
    assert estimator.macs(hard).item() == pytest.approx(float(macs), rel=1e-5)
    assert estimator.params(hard).item() == pytest.approx(float(params), rel=1e-5)


def test_removed_block_costs_nothing():
    model = MODELS.build(dict(
        _scope_='mmpretrain', type='ImageClassifier',
        backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=16, base_channels=16),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=128)))
    reference = copy.deepcopy(model).eval()
    mutator, estimator = prepare(model, 16)
    analyzer = FlopAnalyzer(reference, (torch.zeros(1, 3, 16, 16), ))
    analyzer.unsupported_ops_warnings(False)
    block_cost = analyzer.by_module()['backbone.layer3.1']
    full = estimator.macs(hard=True).item()
    mutator.stage_mutables['backbone__layer3__1-1'].set_kept(0)
    assert full - estimator.macs(hard=True).item() == pytest.approx(block_cost)
    assert estimator.macs(hard=False).item() < full - 0.9 * block_cost


REPO = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
DIGITS = osp.join(REPO, 'configs', 'dms', 'demo', 'digits_search.py')


def test_supernet_counts_equal_flop_analyzer_and_pooling_takes_its_consumers_mask():
    model = build_search_model(DIGITS)
    shape = model.estimator.input_shape
    # every mask ignored: the plain architecture, global average pooling included
    assert model.estimator.estimate('macs', full=True).item() == \
        count_macs(model.architecture, shape)
    assert model.estimator.estimate('params', full=True).item() == \
        count_params(model.architecture)

    pool, = [c for c in model.estimator.calls if c.kind == 'pool']
    assert pool.consumer == 'head.fc'  # reads a view of the pooled tensor
    stream, = [u for u in model.mutator.mutable_units  # the last stage's residual stream
               if 'head.fc' in u.layer_names()]
    stream.mutable_channel.set_kept(5)
    assert model.estimator.call_macs(pool, hard=True).item() == 5 * pool.positions
    assert model.estimator.call_macs(pool, hard=False).item() == \
        stream.mutable_channel.soft_mask.sum().item() * pool.positions


def test_hard_counts_are_exact_integers():
    model = randomize_structure(build_search_model(DIGITS), seed=3)
    for resource in ('macs', 'params'):
        count = model.estimator.estimate(resource, hard=True)
        assert count.dtype == torch.float64 and count.item() == round(count.item())


class SharedWeightModel(nn.Module):
    """conv -> pool -> linear ``a`` -> ReLU -> linear ``b`` holding ``a``'s weight."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Linear(8, 8, bias=False)
        self.b = nn.Linear(8, 8, bias=False)
        self.b.weight = self.a.weight

    def forward(self, x):
        x = self.conv(x).mean((2, 3))
        return self.b(torch.relu(self.a(x)))


def test_a_searched_shared_weight_is_refused():
    """Searching a tied weight's layers would give each its own copy (the tie silently gone)
    and make its count depend on whose masks apply (tied embeddings that are not searched:
    tests/test_deploy/test_hf.py)."""
    with pytest.raises(ValueError, match=r"\['a.weight', 'b.weight'\] are one parameter "
                       r'\(tied\), and \[.*\] are searched.*tie_word_embeddings=False'):
        prepare(SharedWeightModel(), 8)
