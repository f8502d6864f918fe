# Copyright (c) mmdms contributors. All rights reserved.
"""MACs and parameters of a model, counted independently of mmdms's resource estimator."""
from typing import Any, List, Sequence

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape
from mmengine.model import BaseModel

from .data_samples import tensor_forward


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::scaled_dot_product_attention``, which FlopAnalyzer skips: ``q k^T`` and
    ``attn v``, one multiply-add each, ``batch * heads * L * S * (E_qk + E_v)``."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = 1
    for size in q[:-2]:
        batch *= size
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def baddbmm_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::baddbmm(input, a, b)`` (``torch.nn.MultiheadAttention``'s masked scores), which
    FlopAnalyzer skips: the ``bmm`` of ``a`` and ``b``."""
    n, c, t = get_shape(inputs[1])
    return n * c * t * get_shape(inputs[2])[-1]


def native_multi_head_attention_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::_native_multi_head_attention`` (``torch.nn.MultiheadAttention``'s fused fast
    path in eval, batch first), which FlopAnalyzer skips: as its slow path, the input
    projections of query ``(B, L, E)``, key and value ``(B, S, E)``, ``q k^T`` and ``attn v``
    (``B L S E`` each) and the output projection."""
    query, key, value = (get_shape(x) for x in inputs[:3])
    batch, length, embed = query
    source = key[-2]
    return batch * ((length + source + value[-2]) * embed * embed + 2 * length * source * embed
                    + length * embed * embed)


def convolution_mode_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::_convolution_mode``, a conv with string padding (``padding='same'``, e.g.
    ConvMixer's depthwise convs), which FlopAnalyzer skips (it counts ``aten::_convolution``):
    ``prod(output shape) * C_in / groups * k_h * k_w``, its count for any other conv."""
    weight, out = get_shape(inputs[1]), get_shape(outputs[0])
    total = 1
    for size in list(out) + list(weight[1:]):
        total *= size
    return total


class _TensorForward(nn.Module):
    """An OpenMMLab model's ``tensor`` mode as a plain ``forward(x)`` for tracing (with the
    data samples a detector's tensor mode reads: :func:`~.data_samples.tensor_forward`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        if isinstance(self.model, BaseModel):
            return tensor_forward(self.model, x)
        return self.model(x)


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> float:
    """Multiply-adds per sample of ``model`` (eval mode) on an input of ``input_shape``, counted
    by mmengine's :class:`~mmengine.analysis.FlopAnalyzer` (one multiply-add = one "flop") plus
    scaled dot-product attention, string-padded convs, ``baddbmm`` and the fused multi-head
    attention (which it skips); an OpenMMLab model runs its tensor mode on a bare batch
    (:func:`.data_samples.tensor_forward`)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        inputs = (torch.zeros(tuple(input_shape), device=device), )
        analyzer = FlopAnalyzer(_TensorForward(model), inputs)
        analyzer.set_op_handle('aten::scaled_dot_product_attention', sdpa_flop_jit)
        analyzer.set_op_handle('aten::_convolution_mode', convolution_mode_flop_jit)
        analyzer.set_op_handle('aten::baddbmm', baddbmm_flop_jit)
        analyzer.set_op_handle('aten::_native_multi_head_attention',
                               native_multi_head_attention_flop_jit)
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        analyzer.tracer_warnings('none')
        with torch.no_grad():
            total = analyzer.total()
    finally:
        model.train(was_training)
    return total / input_shape[0]


def count_params(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
