# Copyright (c) mmdms contributors. All rights reserved.
"""mmpretrain's HorNet: its stream widths, through its LayerNorms and the recursive gated
convolution ``gnConv``.

``HorNetLayerNorm`` normalises the channels of an ``(N, H, W, C)`` input (``channels_last``,
with ``F.layer_norm``) or of an ``(N, C, H, W)`` one (``channels_first``, written out as mean,
variance and affine ops). Traced, its weight was sliced and its ``normalized_shape`` was not, so
MMRazor's pruning check kept every stream fixed; :class:`HorNetLayerNormRule` makes it a leaf
with the masked LayerNorm of :class:`~mmdms.models.layer_rules.DMSLayerNorm` over its channel
axis. FlopAnalyzer counts ``5 * elements`` MACs for the ``channels_last`` one (an
``aten::layer_norm``) and none for the ``channels_first`` one (element-wise ops only), and so
does the rule.

``gnConv`` (dim ``C``, order ``n``, ``dims = [C / 2^(n-1), ..., C / 2, C]``) projects the
stream with ``proj_in`` (``C -> 2C``), splits the result into ``pwa`` (``dims[0]``) and ``abc``
(``sum(dims)``), filters ``abc`` with ``dwconv`` (a depthwise 7x7 conv, or a
``GlobalLocalFilter``: a LayerNorm over all its channels, a depthwise 3x3 conv on one half,
an FFT filter with ``complex_weight`` on the other, the halves interleaved channel by channel,
a LayerNorm again), splits that into ``dims``, and gates recursively: ``x = pwa * dw[0]``,
``x = projs[i](x) * dw[i + 1]``, then ``proj_out`` (``C -> C``).

MMRazor's channel graph does not follow the ``abc`` split through the global filter (its
interleaving ``reshape`` and its ``view_as_complex`` weight), and fails at the split. Here
``gnConv`` is one layer to the tracer (:class:`GnConvRule`, a leaf) whose input and output are
the stream it sits on: the stream's width prunes ``proj_in``'s input channels and
``proj_out``'s output channels (:meth:`GnConvRule.stream_sublayers`: the mutator gives those
two convs the stream's masks, so the estimator counts them and the export slices them as any
conv). The order widths inside (``proj_in``'s outputs, ``dwconv``, ``projs``, ``proj_out``'s
inputs) stay as they are: the global filter's LayerNorms take their statistics over all of
``abc``, and its interleaving maps the halves' channels onto alternate channels of every order
width, so pruning one order width is not a slice of the filter's halves. (A gnConv with a depthwise ``dwconv`` traces, but
MMRazor keeps its order widths fixed as well: the leaf loses nothing there.)
"""
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.backbones.hornet import HorNetLayerNorm, gnConv
from torch import Tensor

from mmdms.models.layer_rules import LayerCall, LayerRule, register_layer_rule
from mmdms.models.layer_rules.stream_leaf import StreamLeafCheckOp
from mmdms.models.layer_rules.base import channelwise_indices, select_param
from mmdms.models.layer_rules.layer_norm import (DMSLayerNorm, DynamicLastAxisLayerNorm,
                                                 LayerNormRule)


def gnconv_forward(module: gnConv, x: Tensor, kept: Optional[Tensor] = None) -> Tensor:
    """``gnConv.forward``; with ``kept`` (a boolean mask over the stream's channels), on an
    input of the kept channels only, to an output of the kept channels only (``proj_in``'s
    input columns and ``proj_out``'s output rows sliced)."""
    if kept is None:
        return gnConv.forward(module, x)
    proj_in, proj_out = module.proj_in, module.proj_out
    x = F.conv2d(x, proj_in.weight[:, kept], proj_in.bias)
    pwa, abc = torch.split(x, (module.dims[0], sum(module.dims)), dim=1)
    abc = module.dwconv(abc) * module.scale
    dw_list = torch.split(abc, module.dims, dim=1)
    x = pwa * dw_list[0]
    for i in range(module.order - 1):
        x = module.projs[i](x) * dw_list[i + 1]
    bias = None if proj_out.bias is None else proj_out.bias[kept]
    return F.conv2d(x, proj_out.weight[kept], bias)


class DynamicGnConv(StreamLeafCheckOp, gnConv):
    """The op of MMRazor's pruning check for ``gnConv``: the kept stream channels in, the kept
    stream channels out (one mask for both)."""

    @property
    def channels(self) -> int:
        return self.proj_in.in_channels

    def forward(self, x: Tensor) -> Tensor:
        mutable = self.get_mutable_attr('in_channels')
        kept = None if mutable is None else mutable.current_mask.bool()
        return gnconv_forward(self, x, kept)


class DMSGnConv(DynamicGnConv):
    """The DMS op of ``gnConv``: ``gnConv(x * m)`` with the stream's soft mask ``m`` (``proj_in``
    mixes the stream's channels, so the pruned ones must enter as zeros). Its pruned output
    channels are masked by the layers that read the stream."""

    def forward(self, x: Tensor) -> Tensor:
        container = self.get_mutable_attr('in_channels')
        mask = getattr(container, 'soft_mask', None)
        if mask is not None:
            x = x * mask.to(x.dtype).view(1, -1, 1, 1)
        return gnConv.forward(self, x)


@register_layer_rule
class GnConvRule(LayerRule):
    """``gnConv`` (see the module docstring): a leaf of the trace whose input and output
    channels are the stream's, one mask for both. Its own call counts nothing: its layers are
    recorded on their own, ``proj_in`` and ``proj_out`` with the stream's masks."""

    module_types = (gnConv, )
    kind = 'gnconv'
    dms_ops = {gnConv: DMSGnConv}
    check_op = DynamicGnConv
    leaf = True
    owns_params = False
    counts_functional_ops = False  # the global filter's interpolated weight: an upsampling
    inner_reason = ("it is inside a HorNet gnConv, a leaf whose order widths stay fixed (a "
                    "global filter's LayerNorms and channel interleaving span all of them; "
                    "MMRazor's trace of a depthwise gnConv keeps them fixed too); gnConv's "
                    'input and output are searched with the stream')

    def channels(self, module: nn.Module) -> Tuple[int, int]:
        return module.proj_in.in_channels, module.proj_out.out_channels

    def stream_sublayers(self, module: nn.Module) -> Dict[str, Tuple[bool, bool]]:
        return {'proj_in': (True, False), 'proj_out': (False, True)}

    def record(self, name: str, module: nn.Module, x: Tensor, out: Tensor) -> LayerCall:
        c_in, c_out = self.channels(module)
        return LayerCall(name, self.kind, c_in, c_out, x[0, 0].numel())

    def channelwise(self, call: LayerCall) -> bool:
        return True

    def prune(self, module: nn.Module, kept_in: Optional[Sequence[int]],
              kept_out: Optional[Sequence[int]], name: str) -> None:
        """Nothing: ``proj_in`` and ``proj_out`` are sliced as layers of their own."""


class _HorNetNormForward:
    """``HorNetLayerNorm.forward`` around a last-axis LayerNorm's: ``channels_first`` inputs
    go through a permute."""

    @classmethod
    def convert_from(cls, module: HorNetLayerNorm):
        new = cls(module.normalized_shape, eps=module.eps)
        new.data_format = module.data_format
        new.load_state_dict(module.state_dict())
        return new

    def forward(self, x: Tensor) -> Tensor:
        if self.data_format == 'channels_last':
            return super().forward(x)
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class DMSHorNetLayerNorm(_HorNetNormForward, DMSLayerNorm):
    """:class:`~mmdms.models.layer_rules.DMSLayerNorm` with ``HorNetLayerNorm``'s
    ``data_format``: statistics over the kept channels."""


class DynamicHorNetLayerNorm(_HorNetNormForward, DynamicLastAxisLayerNorm):
    """The op of MMRazor's pruning check for ``HorNetLayerNorm``."""


@register_layer_rule
class HorNetLayerNormRule(LayerNormRule):
    """``HorNetLayerNorm``: a LayerNorm over the channels, a leaf of the trace. MACs as
    FlopAnalyzer counts them: ``5 * elements`` in ``channels_last`` (``F.layer_norm``), none in
    ``channels_first`` (element-wise ops, which it skips)."""

    # its DMS op and check op derive from nn.LayerNorm, not HorNetLayerNorm: listed here so
    # that they are counted by this rule, not by LayerNormRule
    module_types = (HorNetLayerNorm, DMSHorNetLayerNorm, DynamicHorNetLayerNorm)
    dms_ops = {HorNetLayerNorm: DMSHorNetLayerNorm}
    check_op = DynamicHorNetLayerNorm
    leaf = True

    def affine(self, module: nn.Module) -> bool:
        return True

    def record(self, name: str, module: nn.Module, x: Tensor, out: Tensor) -> LayerCall:
        call = super().record(name, module, x, out)
        if module.data_format == 'channels_first':
            call.kind = 'norm_elementwise'
        return call

    def macs(self, call: LayerCall, widths: tuple):
        return 0 if call.kind == 'norm_elementwise' else super().macs(call, widths)

    def prune(self, module: nn.Module, kept_in: Optional[Sequence[int]],
              kept_out: Optional[Sequence[int]], name: str) -> None:
        kept = channelwise_indices(kept_in, kept_out, name)
        select_param(module, 'weight', 0, kept)
        select_param(module, 'bias', 0, kept)
        if kept is not None:
            module.normalized_shape = (len(kept), )
