# Copyright (c) mmdms contributors. All rights reserved.
"""depth_mix: torch.lerp's values and gradients, with less work at a full mask."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdms.ops import depth_mix

masks = st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0, allow_nan=False, width=32)


def _grads(fn, x, out, mask, grad):
    x, out, mask = (t.detach().clone().requires_grad_() for t in (x, out, mask))
    y = fn(x, out, mask)
    y.backward(grad)
    return y.detach(), x.grad, out.grad, mask.grad


@settings(max_examples=60, deadline=None)
@given(masks, st.integers(0, 2**16))
def test_values_and_gradients_equal_lerp(m, seed):
    g = torch.Generator().manual_seed(seed)
    x, out, grad = (torch.randn(2, 3, 4, 5, generator=g) for _ in range(3))
    mask = torch.tensor(m)
    expected = _grads(torch.lerp, x, out, mask, grad)
    actual = _grads(depth_mix, x, out, mask, grad)
    for name, e, a in zip(('y', 'x.grad', 'out.grad', 'mask.grad'), expected, actual):
        if m == 1.0 and name == 'x.grad':  # no gradient at all instead of zeros
            assert a is None and torch.equal(e, torch.zeros_like(e))
            continue
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5, msg=name)
    if m == 1.0:
        assert torch.equal(actual[0], out) and torch.equal(actual[2], grad)
    if m == 0.0:
        assert torch.equal(actual[0], x)


def test_a_full_mask_writes_nothing_and_keeps_the_mask_gradient():
    x = torch.randn(4, 8, requires_grad=True)
    out = (x * 2).detach().requires_grad_()
    mask = torch.ones((), requires_grad=True)
    y = depth_mix(x, out, mask)
    assert y.data_ptr() == out.data_ptr()  # a view of the block's output, no new tensor
    grad = torch.randn(4, 8)
    y.backward(grad)
    assert x.grad is None and torch.equal(out.grad, grad)
    torch.testing.assert_close(mask.grad, (grad * (out - x)).sum())


def test_gradient_reaches_the_ratio_through_a_block():
    """The mask's gradient flows on to what made it (the stage's ratio)."""
    ratio = torch.tensor(0.2, requires_grad=True)
    mask = torch.sigmoid(8 * (0.5 - ratio))
    x = torch.randn(3, 6, requires_grad=True)
    block = torch.nn.Linear(6, 6)
    depth_mix(x, x + block(x), mask).square().sum().backward()
    assert ratio.grad is not None and ratio.grad != 0
    assert block.weight.grad is not None and x.grad is not None


def test_without_grad_it_is_lerp():
    x, out = torch.randn(5), torch.randn(5)
    with torch.no_grad():
        y = depth_mix(x, out, torch.tensor(1.0, requires_grad=True))
    assert torch.equal(y, out) and y.data_ptr() != out.data_ptr()


def test_changing_a_full_blocks_output_in_place_is_refused_at_once():
    """Never a silently wrong gradient: autograd refuses the in-place op on the view."""
    x = torch.randn(4, requires_grad=True)
    out = x * 3
    y = depth_mix(x, out, torch.ones((), requires_grad=True))
    with pytest.raises(RuntimeError, match='is a view and is being modified inplace'):
        y.add_(1)
