# Copyright (c) mmdms contributors. All rights reserved.
"""The depth mask of a residual block: ``x + m (g(x) - x)`` (paper Eq. 9's block form)."""
import torch
from torch import Tensor


class _DepthMix(torch.autograd.Function):
    """``torch.lerp(x, out, mask)`` with a backward that skips the work a full mask makes moot.

    With Eq. 3's temperature (``4N`` for depths) most blocks of a long stage have ``m == 1``
    exactly in float32. There ``y = out``: the forward writes nothing, the backward hands the
    incoming gradient to ``out`` as it is and none to ``x`` (``1 - m = 0``), which saves three
    activation-sized tensors and the accumulation of a zero gradient into ``x`` per block. The
    mask's gradient, which the Taylor importance needs for every block, is computed in every case:
    ``dL/dm = sum(dL/dy * (out - x))``.

    Reading the mask's value is free only where it lives on the CPU; on other devices it would
    stall the stream, so there the forward is always ``torch.lerp``. At ``m == 1`` the output is
    a view of ``out``: autograd refuses to change it in place (``y += ...`` or ``relu_(y)`` after
    the block, "a view ... is being modified inplace"); the block's own in-place ops are not
    affected.
    """

    @staticmethod
    def forward(ctx, x: Tensor, out: Tensor, mask: Tensor) -> Tensor:
        ctx.full = mask.device.type == 'cpu' and mask.numel() == 1 and bool(mask == 1)
        ctx.save_for_backward(x, out, mask)
        # an input returned as it is becomes a view of it (autograd's rule for custom functions)
        return out if ctx.full else torch.lerp(x, out, mask)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, out, mask = ctx.saved_tensors
        grad_x = grad_out = grad_mask = None
        if ctx.needs_input_grad[2]:
            # one temporary and a dot product instead of a product tensor and its sum
            diff = (out - x).reshape(-1)
            grad_mask = torch.dot(grad.reshape(-1).to(diff.dtype), diff).reshape(mask.shape)
        if ctx.full:
            grad_out = grad if ctx.needs_input_grad[1] else None
        else:
            if ctx.needs_input_grad[1]:
                grad_out = grad * mask
            if ctx.needs_input_grad[0]:
                grad_x = grad * (1 - mask)
        return grad_x, grad_out, grad_mask


def depth_mix(x: Tensor, out: Tensor, mask: Tensor) -> Tensor:
    """``x + mask * (out - x)`` for a block ``out = g(x)`` and its scalar depth mask.

    Exactly ``out`` at ``mask = 1`` and ``x`` at ``mask = 0``; the same values and gradients as
    ``torch.lerp(x, out, mask)``, cheaper where the mask is 1 (see :class:`_DepthMix`).

    Args:
        x (Tensor): the block's input.
        out (Tensor): the block's output, of ``x``'s shape and dtype.
        mask (Tensor): a one-element mask, ``x``'s dtype.
    """
    if not (x.requires_grad or out.requires_grad or mask.requires_grad) or \
            not torch.is_grad_enabled():
        return torch.lerp(x, out, mask)
    return _DepthMix.apply(x, out, mask)
