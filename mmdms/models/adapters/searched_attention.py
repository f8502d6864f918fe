# Copyright (c) mmdms contributors. All rights reserved.
"""Searched heads and head dims of attentions whose q, k and v come from one ``qkv`` linear
(or Twins' ``q`` and ``kv``; paper App. A.1.1), shared by every family adapter that searches
them (mmpretrain's ``MultiheadAttention`` in a ViT and elsewhere, Swin's ``WindowMSA``,
Swin-V2's ``WindowMSAV2``, BEiT's and EVA's ``BEiTAttention``, HiViT's ``Attention``, Twins'
two attentions in :mod:`.mmpretrain_stream_attention`).

Per attention three mutables: the heads (``lambda = 4 N``, paper App. A.1.1), the qk head dims
and the v head dims, each head keeping the same dims. They act on ``qkv``'s output rows, laid
out ``(3, heads, head_dims)``: ``Q' = Q m_qk m_head``, ``K' = K m_qk m_head``,
``V' = V m_v m_head`` (:class:`QKVMask`, folded into ``qkv``'s weight and bias by its DMS
linear). A pruned head's values are zero, so it adds nothing to ``proj``'s input, whatever its
softmax; with hard masks the masked attention computes exactly the pruned one with the
supernet's softmax scale. ``proj`` reads ``(heads, v_dims)`` (:func:`outer_mask`).

:class:`AttentionRule` counts ``heads * (qk + v) * N^2`` MACs for ``q k^T`` and ``attn v`` per
attention item: one image for a ViT, one window for a window attention (each window is a batch
item of the attention: ``N`` is a window's tokens, and the count is per window times the
windows of an image); rules derived from it count Twins' sub-sampled keys and padded windows.
"""
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
from mmpretrain.models.backbones.efficientformer import AttentionWithBias
from mmpretrain.models.backbones.hivit import Attention as HiViTAttention
from mmpretrain.models.utils.attention import (BEiTAttention, LeAttention, MultiheadAttention,
                                              WindowMSA, WindowMSAV2)

from mmdms.models.layer_rules import (LayerCall, LayerRule, MaskReader, register_layer_rule,
                                      replace_with_dms_op)
from mmdms.models.mutables import DMSMutableChannel
from mmdms.models.search_space import AttentionMasks, mutable_mask


class FixedDims:
    """The head dims of an attention whose heads alone are searched: every dim kept, in the
    search and in the export (``fixed``: readers count ``num_channels``, :func:`outer_mask`
    repeats the heads' mask). Where a zeroed dim is not a removed one (a softmax over the
    dims: XCiT's cross-covariance attention, DaViT's channel attention), a whole head still is:
    its q, k and v are zero, so its output is."""

    fixed = True

    def __init__(self, num_channels: int) -> None:
        self.num_channels = num_channels

    @property
    def hard_mask(self) -> torch.Tensor:
        return torch.ones(self.num_channels)

    soft_mask = hard_mask


def outer_mask(a: DMSMutableChannel, b: DMSMutableChannel, hard: bool) -> torch.Tensor:
    """``a_i b_j`` flattened ``(i, j)``: the mask of a ``(heads, head_dims)`` feature axis."""
    ma = a.hard_mask if hard else a.soft_mask
    if getattr(b, 'fixed', False):
        return ma.repeat_interleave(b.num_channels)
    mb = b.hard_mask if hard else b.soft_mask
    return (ma[:, None] * mb[None, :]).flatten()


class QKVMask:
    """The soft mask over an attention's ``qkv`` output features ``(3, heads, head_dims)``:
    ``Q' = Q m_qk m_head``, ``K' = K m_qk m_head``, ``V' = V m_v m_head``; with ``parts``
    (``'q'``, ``'kv'``, ``'k'``, ``'v'``), over the output of a linear that computes only those
    (Twins' ``q`` and ``kv``, XCiT's class attention's ``q``, ``k`` and ``v``); with
    ``'per_head'``, over ``(heads, [q | k | v])`` features (TinyViT's ``LeAttention``)."""

    def __init__(self, heads: DMSMutableChannel, qk: DMSMutableChannel,
                 v: DMSMutableChannel, parts: str = 'qkv') -> None:
        self.heads, self.qk, self.v, self.parts = heads, qk, v, parts

    def __call__(self, hard: bool = False) -> torch.Tensor:
        if self.parts == 'per_head':
            heads = self.heads.num_channels
            qk = outer_mask(self.heads, self.qk, hard).view(heads, -1)
            v = outer_mask(self.heads, self.v, hard).view(heads, -1)
            return torch.cat([qk, qk, v], dim=1).flatten()
        qk = outer_mask(self.heads, self.qk, hard) if self.parts != 'v' else None
        v = outer_mask(self.heads, self.v, hard) if 'v' in self.parts else None
        masks = [v if part == 'v' else qk for part in self.parts]
        return masks[0] if len(masks) == 1 else torch.cat(masks)


class HeadsDimsMask:
    """The mask over a ``(heads, dims)`` feature axis: ``proj``'s input ``(heads, v_dims)``,
    a ``q_bias`` ``(heads, qk_dims)``."""

    def __init__(self, heads: DMSMutableChannel, dims: DMSMutableChannel) -> None:
        self.heads, self.dims = heads, dims

    def __call__(self, hard: bool = False) -> torch.Tensor:
        return outer_mask(self.heads, self.dims, hard)


@register_layer_rule
class AttentionRule(LayerRule):
    """An attention whose heads and head dims are searched (mmpretrain's ``MultiheadAttention``,
    ``WindowMSA``, ``WindowMSAV2``, ``BEiTAttention``, HiViT's ``Attention``, ``LeAttention``,
    EfficientFormer's ``AttentionWithBias``):
    ``heads * (qk_dims + v_dims) * N^2`` MACs per attention item for ``q k^T`` and ``attn v``
    (its parameters are its linears' and its free parameters').

    The call records the keys each query attends to (``N``, the item's tokens) as
    ``in_shape[0]`` and the queries of all items of a sample as ``positions`` (the estimator
    multiplies ``N`` by the items per sample: the windows of a window attention), so the count
    is ``items * N^2`` per head and dim, not ``(items * N)^2``.
    """

    module_types = (MultiheadAttention, WindowMSA, WindowMSAV2, BEiTAttention, HiViTAttention,
                    LeAttention, AttentionWithBias)
    kind = 'attention'
    owns_params = False

    def counted(self, name: str, space) -> bool:
        return name in space.attentions

    def record(self, name: str, module: nn.Module, x: torch.Tensor,
               out: torch.Tensor) -> LayerCall:
        channels = getattr(module, 'embed_dims', None) or module.qkv.in_features
        return LayerCall(name, self.kind, channels, channels, x.shape[1],
                         in_shape=tuple(x.shape[1:]))

    def widths(self, call: LayerCall, reader: MaskReader) -> tuple:
        att = reader.space.attentions[call.name]
        return tuple(reader.mutable_width(m) for m in (att.heads, att.qk_dims, att.v_dims))

    def macs(self, call: LayerCall, widths: tuple):
        heads, qk, v = widths
        return heads * (qk + v) * call.positions * call.in_shape[0]


def head_mutables(width_args: Dict, num_heads: int, qk_dims: int, head_lambda_scale: float,
                  v_dims: Optional[int] = None,
                  search_dims: bool = True) -> Tuple[DMSMutableChannel, ...]:
    """``(heads, qk_dims, v_dims)`` mutables of one attention (``v_dims``: ``qk_dims`` unless
    given). Heads are whole elements (``step`` 1, at least one kept) with ``lambda`` scaled by
    ``head_lambda_scale``; the head dims take ``width_args`` with their ``min_width`` capped at
    their size, or are :class:`FixedDims` without ``search_dims``."""
    heads = DMSMutableChannel(num_heads, **dict(width_args, step=1, min_width=1,
                                                lambda_scale=head_lambda_scale))

    def dims(size: int) -> DMSMutableChannel:
        if not search_dims:
            return FixedDims(size)
        return DMSMutableChannel(size, **dict(width_args, min_width=min(
            width_args.get('min_width', 1), size)))

    return heads, dims(qk_dims), dims(qk_dims if v_dims is None else v_dims)


def add_traced_attention(model: nn.Module, name: str, space, width_args: Dict,
                         head_lambda_scale: float,
                         per_head_params: Optional[Dict[str, int]] = None,
                         per_head_layout: bool = False,
                         search_dims: bool = True) -> Optional[AttentionMasks]:
    """Search the heads and head dims of attention ``name`` of ``model``, a module the channel
    tracer entered (its ``qkv`` input and ``proj`` output already carry the traced stream, if
    it is searched), whose ``qkv`` writes ``(3, num_heads, head_dims)`` (or whose ``q`` writes
    ``(num_heads, head_dims)`` and ``kv`` ``(2, num_heads, head_dims)``, or ``q``, ``k``, ``v``
    each ``(num_heads, head_dims)``) and whose ``proj``
    reads ``(num_heads, head_dims)``: the widths ``<name>.heads`` / ``.qk_dims`` / ``.v_dims``,
    the masks of those layers' outputs and ``proj``'s input, the attention and, for each parameter
    of ``per_head_params`` (name -> its heads axis, e.g. a relative position bias table's
    last) that the attention has, a free parameter sliced with the heads. With
    ``per_head_layout``, ``qkv`` writes ``(num_heads, [q | k | v])`` instead, of the
    attention's ``key_dim`` qk and ``d`` v dims (TinyViT's ``LeAttention``, EfficientFormer's
    ``AttentionWithBias``). Without ``search_dims`` only the heads are searched (the dims are
    :class:`FixedDims`, no widths of their own).

    Returns:
        AttentionMasks | None: the attention's mutables; None, leaving the attention as
        traced, when the tracer already searched ``qkv``'s output or ``proj``'s input (a mask
        there would be applied twice).
    """
    attn = model.get_submodule(name)
    # the linears that compute q, k and v: one ``qkv``, Twins' ``q`` and ``kv``, or XCiT's
    # class attention's ``q``, ``k`` and ``v``
    parts = ['qkv'] if hasattr(attn, 'qkv') else ['q', 'kv'] if hasattr(attn, 'kv') else \
        ['q', 'k', 'v']
    proj_name = f'{name}.proj'
    if any(space.layer_masks(f'{name}.{p}').out_mask(True) is not None for p in parts) or \
            space.layer_masks(proj_name).in_mask(True) is not None:
        return None
    num_heads = attn.num_heads
    v_dims = attn.proj.in_features // num_heads
    qk_dims = attn.key_dim if per_head_layout else v_dims
    widths = {p: getattr(attn, p).out_features for p in parts}
    expected = {part: num_heads * sum(v_dims if c == 'v' else qk_dims for c in part)
                for part in parts}
    if widths != expected or \
            attn.proj.in_features != num_heads * v_dims:
        raise ValueError(f"'{name}': {widths} output features and proj's "
                         f'{attn.proj.in_features} inputs are not {num_heads} heads of '
                         f'{qk_dims} qk and {v_dims} v dims')
    heads, qk, v = head_mutables(width_args, num_heads, qk_dims, head_lambda_scale, v_dims,
                                 search_dims)
    layers = [f'{name}.{p}' for p in parts]
    for part in parts:
        layout = 'per_head' if per_head_layout else part
        layer = replace_with_dms_op(model, f'{name}.{part}')
        # folded into the layer's weight rows and bias
        layer.dms_output_mask = QKVMask(heads, qk, v, layout)
        space.set_layer_masks(f'{name}.{part}', out_mask=QKVMask(heads, qk, v, layout))
    space.add_width(f'{name}.heads', heads, layers + [proj_name])
    if search_dims:
        space.add_width(f'{name}.qk_dims', qk, [f'{name}.{p}' for p in parts if p != 'v'])
        space.add_width(f'{name}.v_dims', v,
                        [f'{name}.{p}' for p in parts if 'v' in p] + [proj_name])
    space.set_layer_masks(proj_name, in_mask=HeadsDimsMask(heads, v))
    space.add_attention(name, heads, qk, v)
    for param, axis in (per_head_params or {}).items():
        # a tensor: EdgeNeXt's ``scale`` is a per-head parameter or a fixed number
        if isinstance(getattr(attn, param, None), torch.Tensor):
            space.add_param(f'{name}.{param}', mutable_mask(heads), axis)
    return space.attentions[name]


def convert_searched_attention(module: nn.Module, name: str, subnet: Dict, pruned: type) -> bool:
    """At export: make ``module`` (its ``qkv`` and ``proj`` sliced) a ``pruned`` attention
    (``pruned.convert_from(module, heads, qk_dims, v_dims)``) if ``subnet`` searched it.
    Returns whether it did."""
    spec = subnet.get('attentions', {}).get(name)
    if spec is None:
        return False
    pruned.convert_from(module, spec['heads']['kept'], spec['qk_dims']['kept'],
                        spec['v_dims']['kept'])
    return True
