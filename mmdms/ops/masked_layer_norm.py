# Copyright (c) mmdms contributors. All rights reserved.
"""LayerNorm over the features a soft mask keeps: the statistics weighted by the mask.

``mu = sum(m x) / S``, ``var = sum(m (x - mu)^2) / S`` with ``S = sum(m)``, then
``y = x_hat (w m) + b m`` with ``x_hat = (x - mu) / sqrt(var + eps)``. With a 0/1 mask this is
the pruned LayerNorm on the kept features and 0 elsewhere.
"""
from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


class _MaskedLayerNorm(torch.autograd.Function):
    """The masked LayerNorm with its backward written out.

    Autograd through the eight-operation formula keeps four activation-sized tensors and runs
    about twenty activation-sized passes per call (a DeiT-S has 33 LayerNorms, all masked by the
    embedding width); this one keeps ``x_hat`` alone. With ``g`` the output gradient, ``s = w m``,
    ``A = sum_c g s`` and ``B = sum_c g s x_hat`` per position, and ``r = 1 / sqrt(var + eps)``:

    * ``dx = r (g s - m (A + B x_hat) / S)``;
    * ``dw = m sum_p g x_hat``, ``db = m sum_p g``;
    * ``dm = w sum_p g x_hat + b sum_p g`` (the output) ``- sum_p A x_hat / S
      - sum_p B x_hat^2 / (2 S) + sum_p B var r^2 / (2 S)`` (the statistics: ``d mu / d m_c =
      (x_c - mu) / S``, ``d var / d m_c = ((x_c - mu)^2 - var) / S``).

    ``tests/test_ops/test_masked_layer_norm.py`` checks values and every gradient against
    autograd through the formula, in float64.
    """

    @staticmethod
    def forward(ctx, x: Tensor, mask: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                eps: float) -> Tensor:
        total = mask.sum()
        mean = torch.matmul(x, mask).unsqueeze(-1) / total
        x_hat = x - mean
        var = torch.matmul(x_hat * x_hat, mask).unsqueeze(-1) / total
        rstd = torch.rsqrt(var + eps)
        x_hat.mul_(rstd)
        scale = mask if weight is None else weight * mask
        out = x_hat * scale if bias is None else torch.addcmul(bias * mask, x_hat, scale)
        ctx.eps = eps
        ctx.save_for_backward(x_hat, rstd, mask, weight, bias, total)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x_hat, rstd, mask, weight, bias, total = ctx.saved_tensors
        channels = x_hat.shape[-1]
        g = grad.reshape(-1, channels)
        x_hat = x_hat.reshape(-1, channels)
        rstd = rstd.reshape(-1, 1)
        scale = mask if weight is None else weight * mask

        g_x_hat = g * x_hat
        sum_g_x_hat, sum_g = g_x_hat.sum(0), g.sum(0)
        a = torch.mv(g, scale) / total  # A / S per position
        b = torch.mv(g_x_hat, scale) / total  # B / S per position
        del g_x_hat

        grad_x = grad_mask = grad_weight = grad_bias = None
        t = x_hat * b.unsqueeze(1)  # B x_hat / S
        if ctx.needs_input_grad[1]:
            # the statistics' part: -sum_p A x_hat / S - sum_p B x_hat^2 / 2S + sum_p B v r^2 / 2S
            var_rstd2 = 1 - ctx.eps * rstd.squeeze(1) * rstd.squeeze(1)
            grad_mask = (torch.mv(x_hat.t(), a) + 0.5 * (t * x_hat).sum(0)).neg_()
            grad_mask += 0.5 * torch.dot(b, var_rstd2)
            grad_mask += sum_g_x_hat if weight is None else sum_g_x_hat * weight
            if bias is not None:
                grad_mask += sum_g * bias
        if ctx.needs_input_grad[0]:
            t += a.unsqueeze(1)
            grad_x = (g * scale).addcmul_(t, mask, value=-1).mul_(rstd).reshape(grad.shape)
        if weight is not None and ctx.needs_input_grad[2]:
            grad_weight = sum_g_x_hat * mask
        if bias is not None and ctx.needs_input_grad[3]:
            grad_bias = sum_g * mask
        return grad_x, grad_mask, grad_weight, grad_bias, None


def masked_layer_norm(x: Tensor, mask: Tensor, weight: Optional[Tensor] = None,
                      bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    """LayerNorm over the last axis of ``x`` with statistics weighted by ``mask``, the output of
    each feature multiplied by its mask (see the module docstring).

    Args:
        x (Tensor): ``(..., C)``.
        mask (Tensor): ``(C, )``, values in ``[0, 1]``, ``x``'s dtype, not all zero.
        weight (Tensor, optional): ``(C, )`` affine scale.
        bias (Tensor, optional): ``(C, )`` affine shift.
        eps (float): added to the variance.
    """
    return _MaskedLayerNorm.apply(x, mask, weight, bias, eps)


def masked_layer_norm_reference(x: Tensor, mask: Tensor, weight: Optional[Tensor] = None,
                                bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    """The same function as :func:`masked_layer_norm` through autograd (for the tests)."""
    total = mask.sum()
    mean = torch.matmul(x, mask).unsqueeze(-1) / total
    diff = x - mean
    var = torch.matmul(diff * diff, mask).unsqueeze(-1) / total
    out = diff * torch.rsqrt(var + eps)
    scale = mask if weight is None else weight * mask
    return out * scale if bias is None else out * scale + bias * mask
