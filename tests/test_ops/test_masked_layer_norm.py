# Copyright (c) mmdms contributors. All rights reserved.
"""masked_layer_norm: the formula's values and every gradient, and the pruned LayerNorm at a
0/1 mask."""
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdms.ops import masked_layer_norm
from mmdms.ops.masked_layer_norm import masked_layer_norm_reference


def _values_and_grads(fn, inputs, grad):
    inputs = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
    y = fn(*inputs, eps=1e-5)
    y.backward(grad)
    return [y.detach()] + [None if t is None else t.grad for t in inputs]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**16), st.booleans(), st.booleans(), st.integers(1, 9),
       st.integers(0, 3))
def test_values_and_gradients_equal_autograd_through_the_formula(seed, affine, with_bias,
                                                                 channels, zeros):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 4, channels, generator=g, dtype=torch.float64) * 3 + 1
    mask = torch.rand(channels, generator=g, dtype=torch.float64)
    mask[:min(zeros, channels - 1)] = 0  # pruned features, never all of them
    weight = torch.randn(channels, generator=g, dtype=torch.float64) if affine else None
    bias = torch.randn(channels, generator=g, dtype=torch.float64) if affine and with_bias \
        else None
    grad = torch.randn(3, 4, channels, generator=g, dtype=torch.float64)
    inputs = (x, mask, weight, bias)
    expected = _values_and_grads(masked_layer_norm_reference, inputs, grad)
    actual = _values_and_grads(masked_layer_norm, inputs, grad)
    for name, e, a in zip(('y', 'x', 'mask', 'weight', 'bias'), expected, actual):
        if e is None:
            assert a is None, name
            continue
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9, msg=name)


def test_a_hard_mask_is_the_pruned_layer_norm():
    torch.manual_seed(0)
    x, weight, bias = torch.randn(2, 5, 16), torch.randn(16), torch.randn(16)
    kept = torch.tensor([0, 3, 4, 9, 15])
    mask = torch.zeros(16)
    mask[kept] = 1
    out = masked_layer_norm(x, mask, weight, bias)
    pruned = F.layer_norm(x[..., kept], (len(kept), ), weight[kept], bias[kept])
    torch.testing.assert_close(out[..., kept], pruned, rtol=1e-5, atol=1e-5)
    assert torch.equal(out[..., mask == 0], torch.zeros(2, 5, 11))


def test_the_input_is_not_changed_and_a_mask_without_grad_gets_none():
    x = torch.randn(4, 6, requires_grad=True)
    before = x.detach().clone()
    y = masked_layer_norm(x, torch.rand(6), torch.randn(6, requires_grad=True))
    y.sum().backward()
    assert torch.equal(x.detach(), before) and x.grad is not None
