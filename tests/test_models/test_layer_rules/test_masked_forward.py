# Copyright (c) mmdms contributors. All rights reserved.
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st
from mmcv.cnn.bricks import Conv2dAdaptivePadding

from mmdms.models import DMSMaskContainer, DMSMutableChannel
from mmdms.models.layer_rules import (DMSBatchNorm2d, DMSConv2d, DMSLayerNorm, DMSLinear,
                                      replace_with_dms_op)


def with_input_mutable(layer, mutable):
    in_attr = layer.attr_mappings['in_channels']
    layer.register_mutable_attr('in_channels', DMSMaskContainer(getattr(layer, in_attr)))
    layer.get_mutable_attr('in_channels').register_mutable(mutable, 0, mutable.num_channels)
    return layer


def random_mutable(n, kept, seed=0):
    mutable = DMSMutableChannel(n)
    mutable.importance.copy_(torch.rand(n, generator=torch.Generator().manual_seed(seed)))
    mutable.current_choice = kept
    return mutable


def test_conv_multiplies_its_input_by_the_soft_mask():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 4, 3, padding=1)
    dms = replace_with_dms_op(nn.ModuleDict({'c': conv}), 'c')
    assert isinstance(dms, DMSConv2d) and torch.equal(dms.weight, conv.weight)
    mutable = random_mutable(6, 4)
    with_input_mutable(dms, mutable)
    x = torch.randn(2, 6, 5, 5)
    expected = conv(x * mutable.soft_mask.view(1, -1, 1, 1))
    # the mask may scale the weight instead of the input: equal up to float rounding
    torch.testing.assert_close(dms(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('make_layer, shape', [
    (lambda: nn.Conv2d(6, 8, 3, padding=1), (2, 6, 9, 9)),
    (lambda: nn.Conv2d(6, 12, 3, padding=1, groups=3), (2, 6, 9, 9)),  # grouped
    (lambda: nn.Conv2d(6, 12, 3, stride=2, padding=1, groups=6), (2, 6, 9, 9)),  # depthwise x2
    (lambda: Conv2dAdaptivePadding(6, 6, 3, stride=2, groups=6), (2, 6, 9, 10)),
    (lambda: Conv2dAdaptivePadding(6, 8, 5, stride=2), (2, 6, 9, 10)),
    (lambda: nn.Linear(6, 5), (4, 7, 6)),
    (lambda: nn.Linear(6, 50), (2, 6)),  # weight larger than the input: the input is masked
    (lambda: nn.Conv2d(64, 64, 3), (1, 64, 4, 4)),
])
def test_masking_the_weight_is_masking_the_input(make_layer, shape):
    """Whichever side the mask scales, the output and the gradients of the ratio and the
    weight are those of the layer on ``x * m``."""
    torch.manual_seed(0)
    layer = make_layer()
    dms = replace_with_dms_op(nn.ModuleDict({'l': layer}), 'l')
    mutable = random_mutable(shape[dms.mask_dim], 3)
    with_input_mutable(dms, mutable)
    x = torch.randn(shape)
    view = [1] * x.dim()
    view[dms.mask_dim] = -1
    expected = layer(x * mutable.soft_mask.view(view))
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad((expected * grad).sum(), [mutable.dms_ratio,
                                                                   layer.weight])
    mutable._mask_cache = None  # a fresh mask for the second forward
    out = dms(x)
    grads = torch.autograd.grad((out * grad).sum(), [mutable.dms_ratio, dms.weight])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    for actual, wanted in zip(grads, expected_grads):
        torch.testing.assert_close(actual, wanted, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('rows', [8, 1])  # weight folded / input and output multiplied
def test_linear_applies_an_output_mask(rows):
    torch.manual_seed(0)
    linear = nn.Linear(6, 5)
    dms = with_input_mutable(DMSLinear.convert_from(linear), random_mutable(6, 4))
    dms.load_state_dict(linear.state_dict(), strict=False)
    out_mutable = random_mutable(5, 2, seed=3)
    dms.dms_output_mask = lambda: out_mutable.soft_mask
    in_mask = dms.get_mutable_attr('in_channels').soft_mask
    x = torch.randn(rows, 6)
    expected = linear(x * in_mask) * out_mutable.soft_mask
    torch.testing.assert_close(dms(x), expected, rtol=1e-5, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 24), st.data())
def test_hard_masked_linear_equals_the_pruned_linear(n, data):
    kept = data.draw(st.integers(1, n))
    linear = nn.Linear(n, 3)
    dms = with_input_mutable(DMSLinear.convert_from(linear), random_mutable(n, kept))
    dms.load_state_dict(linear.state_dict(), strict=False)
    mutable = dms.get_mutable_attr('in_channels').mutable_channels[(0, n)]
    mutable.fix_chosen()
    keep = mutable.current_mask
    x = torch.randn(4, n)
    pruned = nn.Linear(int(keep.sum()), 3)
    pruned.weight.data, pruned.bias.data = linear.weight[:, keep], linear.bias
    assert torch.allclose(dms(x), pruned(x[:, keep]), atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 32), st.data())
def test_hard_masked_layernorm_equals_the_pruned_layernorm(n, data):
    kept = data.draw(st.integers(1, n))
    ln = nn.LayerNorm(n)
    nn.init.normal_(ln.weight)
    nn.init.normal_(ln.bias)
    mutable = random_mutable(n, kept, seed=n)
    dms = with_input_mutable(replace_with_dms_op(nn.ModuleDict({'ln': ln}), 'ln'), mutable)
    assert isinstance(dms, DMSLayerNorm)
    mutable.fix_chosen()
    keep = mutable.current_mask
    x = torch.randn(3, 7, n)
    pruned = nn.LayerNorm(int(keep.sum()))
    pruned.weight.data, pruned.bias.data = ln.weight[keep], ln.bias[keep]
    out = dms(x)
    assert torch.allclose(out[..., keep], pruned(x[..., keep]), atol=1e-5)
    assert torch.all(out[..., ~keep] == 0)


def test_batchnorm_runs_unmasked_and_keeps_its_statistics():
    bn = nn.BatchNorm2d(5)
    bn.running_mean.fill_(0.3)
    dms = replace_with_dms_op(nn.ModuleDict({'bn': bn}), 'bn')
    assert isinstance(dms, DMSBatchNorm2d) and torch.equal(dms.running_mean, bn.running_mean)
    with_input_mutable(dms, random_mutable(5, 2))
    bn.eval(), dms.eval()
    x = torch.randn(2, 5, 3, 3)
    assert torch.equal(dms(x), bn(x))


def test_container_concatenates_soft_masks_and_ones():
    a, b = random_mutable(3, 2), random_mutable(4, 1, seed=1)
    container = DMSMaskContainer(9)
    container.register_mutable(a, 0, 3)
    container.register_mutable(b, 5, 9)
    mask = container.soft_mask
    assert torch.equal(mask, torch.cat([a.soft_mask, torch.ones(2), b.soft_mask]))
    assert DMSMaskContainer(4).soft_mask is None
