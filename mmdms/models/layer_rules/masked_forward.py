# Copyright (c) mmdms contributors. All rights reserved.
"""How a DMS op reads its masks: the channel container that assembles a layer's soft mask, and
the masked forward shared by the conv and linear ops (paper App. A.1.1).

Each DMS op is a subclass of an MMRazor dynamic op, so MMRazor's channel containers, units and
``to_static_op`` work unchanged. Only ``forward`` differs: instead of slicing weights by a hard
mask it runs the original (static) layer, with all its weights, on ``x * m``. With hard masks
this equals the pruned layer on the kept channels (zero inputs contribute nothing).

Conv and linear layers compute ``x * m`` as ``W * m`` when the weight has no more elements than
the input: the mask scales the weight's input-channel axis, ``conv(x * m, W) = conv(x, W * m)``
(zero padding commutes with a per-channel factor). It is the same function with the same
gradients (up to float rounding), with weight-sized instead of activation-sized multiplies in the
forward and backward and no masked copy of the input kept for the backward
(``benchmarks/bench_search_overhead.py``).
"""
from typing import Optional

import torch
import torch.nn as nn
from mmrazor.models.mutables import MutableChannelContainer, SimpleMutableChannel
from mmrazor.registry import MODELS
from torch import Tensor

from .base import replace_with_dms_op


def _has_soft_mask(mutable) -> bool:
    """A DMS mutable (checked on the class: ``hasattr`` on the instance computes the mask)."""
    return hasattr(type(mutable), 'soft_mask')


@MODELS.register_module()
class DMSMaskContainer(MutableChannelContainer):
    """MMRazor's channel container that also assembles the soft mask of its channels.

    :attr:`soft_mask` concatenates the soft masks of the DMS mutables registered over the
    layer's channel ranges (ones where none is); it is ``None`` when no DMS mutable is registered,
    so such a layer runs without any masking.
    """

    @property
    def soft_mask(self) -> Optional[Tensor]:
        return self.mask(hard=False)

    def mask(self, hard: bool = False) -> Optional[Tensor]:
        """The soft (or, with ``hard``, the 0/1) mask over the layer's channels.

        ``None`` when no DMS mutable is registered (the layer keeps all its channels).
        """
        if len(self.mutable_channels) == 1:  # the usual case, read at every forward
            ((start, end), mutable), = self.mutable_channels.items()
            if start == 0 and end == self.num_channels:
                if not _has_soft_mask(mutable):
                    return None
                return mutable.hard_mask if hard else mutable.soft_mask
        mutables = list(self.mutable_channels.values())
        if not any(_has_soft_mask(m) for m in mutables):
            return None
        self._fill_unregistered_range()
        parts = [(m.hard_mask if hard else m.soft_mask) if _has_soft_mask(m)
                 else m.current_mask.float() for m in self.mutable_channels.values()]
        device = next((p.device for p in parts), None)
        return torch.cat([p.to(device) for p in parts])

    def _fill_unregistered_range(self) -> None:
        """Register all-ones channels over every gap, in channel order.

        MMRazor 1.0's version builds ``SimpleMutableChannel(last_end - start)`` for a gap between
        two registered ranges, a negative width ("Trying to create tensor with negative
        dimension"); this one uses ``start - last_end``.
        """
        gaps, last_end = [], 0
        for start, end in sorted(self.mutable_channels):
            if last_end < start:
                gaps.append((last_end, start))
            last_end = max(last_end, end)
        if last_end < self.num_channels:
            gaps.append((last_end, self.num_channels))
        if not gaps and list(self.mutable_channels) == sorted(self.mutable_channels):
            return  # the usual case on every forward after the first: nothing to do
        for start, end in gaps:
            self.register_mutable(SimpleMutableChannel(end - start), start, end)
        ordered = sorted(self.mutable_channels.items())
        self.mutable_channels.clear()
        for (start, end), mutable in ordered:
            self.mutable_channels[(start, end)] = mutable


class DMSInputMaskMixin:
    """``forward`` = the static layer's forward on ``x * soft_mask`` (channel axis ``mask_dim``).

    The weight is multiplied by the mask instead when it has no more elements than the input
    (same function, fewer operations). A layer may also carry ``dms_output_mask``, a callable
    returning a mask over its output channels (the attention's heads and head dims on ``qkv``);
    it is folded into the weight's output rows and the bias the same way; and
    ``dms_input_mask``, one over its input channels, applied with the traced one (MViT-V2's
    heads on ``proj``).
    """

    mask_dim = 1
    #: Set by the mutator when the producing BatchNorm applies this layer's input mask
    #: (:mod:`mmdms.models.mutators.norm_folding`).
    fold_input_mask = False

    def input_soft_mask(self) -> Optional[Tensor]:
        if self.fold_input_mask:
            return None
        container = self.get_mutable_attr('in_channels')
        mask = getattr(container, 'soft_mask', None)
        source = getattr(self, 'dms_input_mask', None)
        if source is not None:
            mask = source() if mask is None else mask * source()
        return mask

    def output_soft_mask(self) -> Optional[Tensor]:
        source = getattr(self, 'dms_output_mask', None)
        return None if source is None else source()

    def forward(self, x: Tensor) -> Tensor:
        mask, out_mask = self.input_soft_mask(), self.output_soft_mask()
        if mask is None and out_mask is None:
            return self.static_op_factory.forward(self, x)
        if self.weight.numel() <= x.numel():
            weight, bias = self.weight, self.bias
            if mask is not None:
                weight = weight * self.weight_mask(mask)
            if out_mask is not None:
                out_mask = out_mask.to(weight.dtype)
                weight = weight * out_mask.view(-1, *([1] * (weight.dim() - 1)))
                bias = None if bias is None else bias * out_mask
            return self.forward_with_weight(x, weight, bias)
        shape = [1] * x.dim()
        shape[self.mask_dim] = -1
        if mask is not None:
            x = x * mask.view(shape).to(x.dtype)
        out = self.static_op_factory.forward(self, x)
        if out_mask is not None:
            shape = [1] * out.dim()
            shape[self.mask_dim] = -1
            out = out * out_mask.view(shape).to(out.dtype)
        return out

    def weight_mask(self, mask: Tensor) -> Tensor:
        """``mask`` over the input channels, shaped to multiply the weight."""
        raise NotImplementedError

    def forward_with_weight(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        """The static layer's forward with ``weight`` and ``bias`` in place of its own."""
        raise NotImplementedError


def mask_input_channels(model: nn.Module, name: str, mutable) -> nn.Module:
    """Make layer ``name`` read all its input channels through ``mutable``'s soft mask.

    The layer becomes its DMS op (:func:`~.base.replace_with_dms_op`) and ``mutable`` is
    registered over all of its input channels (for search spaces built from a known layout
    rather than traced, e.g. a ViT's).
    """
    layer = replace_with_dms_op(model, name)
    if not hasattr(layer, 'get_mutable_attr'):
        raise TypeError(f"Layer '{name}' ({type(layer).__name__}) has no DMS op to mask its input")
    container = layer.get_mutable_attr('in_channels')
    if container is None:
        in_attr = layer.attr_mappings['in_channels']
        layer.register_mutable_attr('in_channels', DMSMaskContainer(getattr(layer, in_attr)))
        container = layer.get_mutable_attr('in_channels')
    if container.num_channels != mutable.num_channels:
        raise ValueError(f"Layer '{name}' has {container.num_channels} input channels, the "
                         f'mutable {mutable.num_channels}')
    container.mutable_channels.clear()
    container.register_mutable(mutable, 0, mutable.num_channels)
    return layer
