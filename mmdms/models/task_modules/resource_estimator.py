# Copyright (c) mmdms contributors. All rights reserved.
"""The resource ``r_c`` of a DMS search model as a differentiable function of its masks.

Shapes come from one recorded forward at ``input_shape``; each layer's cost is then a function
of the expected widths (sums of the soft masks) of its input and output channels, weighted by
the soft mask of the block it lies in (paper Eq. 5-6, App. A.1.2). With hard masks the counts
are the exact counts of the pruned static model, using the rules of mmengine's ``FlopAnalyzer``
(which counts one multiply-add as one "flop"):

* conv: ``k_h k_w (C_in / groups) C_out H_out W_out`` (a depthwise conv scales with C, not C^2);
* linear: ``in * out * tokens``;
* attention: ``heads * (qk_dims + v_dims) * N^2`` for ``q k^T`` and ``attn v``;
* BatchNorm (eval): ``2 * elements`` (1 without affine); Layer/GroupNorm: ``5 * elements``
  (4 without affine);
* adaptive average pooling (``nn.AdaptiveAvgPool2d``): ``elements`` of its input, whose channels
  are those of the layer that reads its output (e.g. a squeeze-excitation's first conv, the
  classifier's linear); in EfficientNet the SE poolings are over 1% of the MACs;
* element-wise ops, max pooling and upsampling are not counted. ``FlopAnalyzer`` skips the first
  two; it counts nearest upsampling (one per output element) and YOLOv8's head's fixed DFL
  ``matmul`` with ``proj``: 0.013% and 0.003% of the YOLOv8 supernet's MACs, 0.06% of a random
  subnet's (the classifiers have neither).

Hard-mask counts are accumulated in float64, so that they are exact integers also beyond 2^24.

Parameters: every parameter of the model, each layer's counted from its expected widths, and
parameters owned by no layer (class token, position embedding) scaled on a searched last axis.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from mmpretrain.models.utils.attention import MultiheadAttention
from mmrazor.registry import TASK_UTILS
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from mmdms.models.mutators.masked_layout import LayerMasks, MaskedLayout

RESOURCE_TYPES = ('macs', 'params', 'latency')


@dataclass
class LayerCall:
    """One call of a layer in the recorded forward (per sample)."""
    name: str
    kind: str  # conv | linear | bn | norm | attention | pool
    in_channels: int
    out_channels: int
    positions: int  # output pixels (conv), tokens (linear, attention), elements / C (norms)
    kernel: int = 1  # k_h * k_w
    groups: int = 1
    affine: bool = True  # norms: has weight and bias
    bias: bool = False  # conv / linear: has a bias
    in_shape: tuple = ()  # per-sample input shape
    consumer: Optional[str] = None  # pool: the layer that reads its output (gives its channels)

    @property
    def depthwise(self) -> bool:
        return self.kind == 'conv' and self.groups == self.in_channels > 1


def _kind(module: nn.Module) -> Optional[str]:
    if isinstance(module, MultiheadAttention):
        return 'attention'
    if isinstance(module, nn.Conv2d):
        return 'conv'
    if isinstance(module, nn.Linear):
        return 'linear'
    if isinstance(module, _BatchNorm):
        return 'bn'
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
        return 'norm'
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return 'pool'
    return None


def _call_of(name: str, module: nn.Module, kind: str, x: Tensor, out: Tensor) -> LayerCall:
    batch = out.shape[0]
    if kind == 'conv':
        return LayerCall(name, kind, module.in_channels, module.out_channels,
                         out[0, 0].numel(), module.kernel_size[0] * module.kernel_size[1],
                         module.groups, bias=module.bias is not None,
                         in_shape=tuple(x.shape[1:]))
    if kind == 'linear':
        return LayerCall(name, kind, module.in_features, module.out_features,
                         out.numel() // (batch * module.out_features),
                         bias=module.bias is not None, in_shape=tuple(x.shape[1:]))
    if kind == 'attention':
        return LayerCall(name, kind, module.embed_dims, module.embed_dims, x.shape[1])
    if kind == 'bn':
        return LayerCall(name, kind, module.num_features, module.num_features,
                         x.numel() // (batch * module.num_features), affine=module.affine)
    if kind == 'pool':
        return LayerCall(name, kind, x.shape[1], x.shape[1], x[0, 0].numel())
    channels = module.num_channels if isinstance(module, nn.GroupNorm) \
        else module.normalized_shape[-1]
    affine = module.affine if isinstance(module, nn.GroupNorm) else module.elementwise_affine
    return LayerCall(name, kind, channels, channels, x.numel() // (batch * channels),
                     affine=affine)


@TASK_UTILS.register_module()
class DMSResourceEstimator:
    """MACs, parameters and latency of a DMS search model from its soft (or hard) masks.

    Args:
        input_shape (Sequence[int]): the input of the recorded forward, ``(1, 3, H, W)``; the
            counts are per sample at this resolution.
    """

    def __init__(self, input_shape: Sequence[int] = (1, 3, 224, 224)) -> None:
        self.input_shape = tuple(input_shape)
        self.calls: List[LayerCall] = []
        self.layout: Optional[MaskedLayout] = None
        self._fixed_params = 0
        self._block_params: Dict[str, int] = {}
        self._free_params: List[tuple] = []
        self.latency_model = None
        self._full = False

    # recording ---------------------------------------------------------------------------------
    def prepare(self, model: nn.Module, layout: MaskedLayout,
                forward: Optional[Callable[[nn.Module, Tensor], object]] = None) -> None:
        """Record every layer's shapes with one forward of ``model`` on zeros of
        ``input_shape`` (``forward(model, x)``; default ``model(x, mode='tensor')``)."""
        self.layout = layout
        forward = forward or (lambda m, x: m(x, mode='tensor'))
        self.calls = []
        handles = []
        pool_outputs: List[tuple] = []  # (output tensor, its pool call)
        for name, module in model.named_modules():
            kind = _kind(module)
            if kind is None or (kind == 'attention' and name not in layout.attentions):
                continue

            def hook(mod, args, out, name=name, kind=kind):
                call = _call_of(name, mod, kind, args[0], out)
                self.calls.append(call)
                if kind == 'pool':
                    pool_outputs.append((out, call))
                elif kind in ('conv', 'linear'):
                    _match_pool_consumer(name, args[0], call.in_channels, pool_outputs)

            handles.append(module.register_forward_hook(hook))
        param = next(model.parameters())
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                forward(model, torch.zeros(self.input_shape, device=param.device))
        finally:
            model.train(was_training)
            for handle in handles:
                handle.remove()
        self._split_params(model)

    def _split_params(self, model: nn.Module) -> None:
        """Parameters of the recorded layers are counted by rule; the others as they are
        (weighted by the depth mask of their block, if any)."""
        recorded = {c.name for c in self.calls if c.kind != 'attention'}
        self._fixed_params = 0
        self._free_params = []
        self._param_widths: Dict[str, int] = {}
        self._block_params: Dict[str, int] = {}
        for name, p in model.named_parameters():
            owner = name.rpartition('.')[0]
            if any(owner == r or owner.startswith(r + '.') for r in recorded):
                continue
            if name in self.layout.params:
                self._free_params.append((name, p.numel() // p.shape[-1]))
                self._param_widths[name] = p.shape[-1]
            elif self.layout.block_of(name) is not None:
                self._block_params[name] = p.numel()
            else:
                self._fixed_params += p.numel()

    # counting ----------------------------------------------------------------------------------
    def _mask(self, fn, hard: bool) -> Optional[Tensor]:
        if self._full:
            return None
        mask = fn(hard)
        return mask.double() if hard and mask is not None else mask

    def _depth_weight(self, name: str, hard: bool):
        found = self.layout.block_of(name)
        if found is None or self._full:
            return 1.0
        mutable, index = found
        return mutable.element_hard_mask()[index].double() if hard else \
            mutable.block_masks[index]

    def _widths(self, call: LayerCall, hard: bool):
        if call.kind == 'pool':
            masks = self.layout.layers.get(call.consumer, LayerMasks())
            mask = self._mask(masks.in_mask, hard)
            width = call.in_channels if mask is None else mask.sum()
            return width, width
        masks = self.layout.layers.get(call.name, LayerMasks())
        in_mask, out_mask = self._mask(masks.in_mask, hard), self._mask(masks.out_mask, hard)
        c_in = call.in_channels if in_mask is None else in_mask.sum()
        c_out = call.out_channels if out_mask is None else out_mask.sum()
        if call.kind in ('bn', 'norm') or call.depthwise:
            # Channel-wise layers: one mask, whichever side carries it.
            c_in = c_out = c_in if in_mask is not None else c_out
        return c_in, c_out

    def _call_macs(self, call: LayerCall, hard: bool):
        if call.kind == 'attention':
            att = self.layout.attentions[call.name]
            heads, qk, v = (m.num_channels if self._full else
                            (m.hard_mask.double() if hard else m.soft_mask).sum()
                            for m in (att.heads, att.qk_dims, att.v_dims))
            return heads * (qk + v) * call.positions ** 2
        c_in, c_out = self._widths(call, hard)
        if call.kind == 'conv':
            if call.depthwise:  # C_in / groups = 1
                return call.kernel * c_out * call.positions
            return call.kernel * c_in * c_out / call.groups * call.positions
        if call.kind == 'linear':
            return c_in * c_out * call.positions
        if call.kind == 'pool':
            return c_in * call.positions
        per_element = (2 if call.affine else 1) if call.kind == 'bn' else \
            (5 if call.affine else 4)
        return per_element * c_in * call.positions

    def _call_params(self, call: LayerCall, hard: bool):
        c_in, c_out = self._widths(call, hard)
        if call.kind in ('bn', 'norm'):
            return 2 * c_in if call.affine else 0
        weight = call.kernel * c_out if call.depthwise else \
            call.kernel * c_in * c_out / call.groups
        return weight + c_out if call.bias else weight

    def macs(self, hard: bool = False) -> Tensor:
        """Expected multiply-adds per sample (exact with ``hard`` masks)."""
        total = 0.
        for call in self.calls:
            total = total + self._call_macs(call, hard) * self._depth_weight(call.name, hard)
        return torch.as_tensor(total, dtype=self._dtype(hard))

    def _dtype(self, hard: bool) -> torch.dtype:
        return torch.float64 if hard or self._full else torch.float32

    def params(self, hard: bool = False) -> Tensor:
        """Expected number of parameters (exact with ``hard`` masks)."""
        total = float(self._fixed_params)
        seen = set()
        for call in self.calls:
            if call.kind in ('attention', 'pool') or call.name in seen:
                continue
            seen.add(call.name)
            total = total + self._call_params(call, hard) * self._depth_weight(call.name, hard)
        for name, rows in self._free_params:
            mask = self._mask(self.layout.params[name], hard)
            width = self._param_widths[name] if mask is None else mask.sum()
            total = total + rows * width * self._depth_weight(name, hard)
        for name, numel in self._block_params.items():
            total = total + numel * self._depth_weight(name, hard)
        return torch.as_tensor(total, dtype=self._dtype(hard))

    def latency(self, hard: bool = False) -> Tensor:
        """Expected latency in ms from the fitted per-layer latency model."""
        if self.latency_model is None:
            raise RuntimeError('Latency has not been measured: call fit_latency(model) first '
                               '(ResourceLossHook does it before a latency-constrained search)')
        total = 0.
        for call, (layer_max, coeffs) in zip(self.calls, self.latency_model):
            if layer_max == 0:
                continue
            c_in, c_out = self._widths(call, hard)
            x, y = c_in / call.in_channels, c_out / call.out_channels
            total = total + layer_max * _latency_basis(x, y) @ coeffs * \
                self._depth_weight(call.name, hard)
        return torch.as_tensor(total, dtype=torch.float32)

    def estimate(self, resource: str = 'macs', hard: bool = False, full: bool = False) -> Tensor:
        """``r_c`` for ``resource`` in :data:`RESOURCE_TYPES`; with ``full``, the supernet's
        cost (every mask ignored)."""
        if resource not in RESOURCE_TYPES:
            raise ValueError(f"Unknown resource type '{resource}': use one of {RESOURCE_TYPES}")
        self._full = full
        try:
            return getattr(self, resource)(hard)
        finally:
            self._full = False

    def fit_latency(self, model: nn.Module, **kwargs) -> None:
        """Measure each conv / linear layer over a grid of widths on the model's device and fit
        ``F(x_in, x_out)`` (see :func:`mmdms.models.task_modules.latency_model.fit_layer`)."""
        from .latency_model import fit_layer
        modules = dict(model.named_modules())
        self.latency_model = [fit_layer(modules[c.name], c, **kwargs)
                              if c.kind in ('conv', 'linear') else (0., None)
                              for c in self.calls]


def _match_pool_consumer(name: str, x: Tensor, channels: int, pool_outputs: List[tuple]) -> None:
    """Make layer ``name`` the consumer of the pooling whose output (or a view of it) it reads,
    so the pooling counts the channels of the layer's input mask."""
    for out, call in pool_outputs:
        if call.consumer is None and (x is out or x._base is out) \
                and call.in_channels == channels:
            call.consumer = name
            return


def _latency_basis(x, y) -> Tensor:
    """``[1, x, y, xy]``: the quadratic surface fitted per layer (App. A.1.2): overhead,
    input- and output-bound terms, compute-bound term."""
    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    return torch.stack([torch.ones_like(x), x, y, x * y])
