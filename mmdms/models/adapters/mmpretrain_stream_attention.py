# Copyright (c) mmdms contributors. All rights reserved.
"""mmpretrain attentions whose forward reads the stream width from its input.

``WindowMSA.forward`` (Swin) splits ``qkv``'s output into heads of ``C // num_heads`` features and
merges them back with ``reshape(B_, N, C)``, ``C`` being its *input's* width. That is the
attention's width only while the stream is not pruned: once the stream keeps ``C' < C`` channels
(``qkv`` reads ``C'``, still writes ``3 C``), the reshape fails. So MMRazor's pruning check
(which runs a pruned copy) kept every Swin stream fixed, and a static Swin with a pruned stream
could not run. Here the head width is read from the heads' declared width
(``qkv.out_features``), which is the same function of the same weights at every stream width.
HiViT's ``Attention``, ``BEiTAttention`` (BEiT, EVA), XCiT's ``XCA`` and ``ClassAttntion``,
Swin-V2's ``WindowMSAV2`` and Twins' two attentions split or merge their heads with ``C`` alike.
EdgeNeXt's ``ChannelMultiheadAttention`` reads ``B, N`` from its input for its reshapes, which
MMRazor's channel graph takes for a join of the stream with ``qkv``'s output (so stages 1-3 of
EdgeNeXt were fixed); its trace forward splits and merges the heads on their own axis.
(DaViT's ``DaViTWindowMSA`` does too; with it and DaViT's outputs made stream-free, the zoo's
DaViT-tiny searched its streams but its static model failed to run, a LayerNorm of 47 kept
channels meeting 48: not solved, so DaViT keeps its streams fixed.)

Swin's ``WindowMSA`` also has its heads and qk / v head dims searched, inside the traced module
(:class:`_SearchedHeadsAdapter`, with the machinery of the ViT space,
:mod:`~mmdms.models.adapters.searched_attention`): every window is one batch item of the
attention, so its ``heads * (qk + v) * N^2`` MACs are counted per window of ``N`` tokens, times
the windows (shifted or not) of an image; the export slices ``relative_position_bias_table`` to
the kept heads and keeps the supernet's softmax scale.
"""
import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.backbones.hivit import Attention as HiViTAttention
from mmpretrain.models.backbones.twins import (GlobalSubsampledAttention,
                                               LocallyGroupedSelfAttention)
from mmpretrain.models.backbones.xcit import XCA, ClassAttntion
from mmpretrain.models.utils.attention import (BEiTAttention, ChannelMultiheadAttention,
                                               WindowMSA, WindowMSAV2)

from mmdms.models.architectures.pruned_attention import attention_scale, set_pruned_heads
from mmdms.models.layer_rules import LayerCall, register_layer_rule
from mmdms.models.layer_rules.base import first_input
from mmdms.models.search_space import mutable_mask
from mmdms.registry import ADAPTERS
from .base import FamilyAdapter
from .searched_attention import (AttentionRule, HeadsDimsMask, add_traced_attention,
                                 convert_searched_attention)


def _head_dims(layer: nn.Linear, parts: int) -> int:
    """The features per head of ``layer``'s output, split into ``parts`` (heads, or q / k / v
    times heads), from its declared width: in MMRazor's pruned copy a pruned ``out_features``
    is still the full one, so that pruning a head width unevenly fails its check (the heads'
    widths stay fixed) instead of splitting the heads wrongly."""
    return layer.out_features // parts


def split_heads(self, qkv: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``q, k, v`` as ``(B, heads, N, dims)`` from the ``(B, N, features)`` output of ``qkv``.

    An attention whose heads DMS searched and exported has ``qk_dims`` and ``v_dims``
    (:func:`~mmdms.models.architectures.pruned_attention.set_pruned_heads`): ``qkv`` writes
    ``[q | k | v]`` of ``(heads, qk_dims)``, ``(heads, qk_dims)``, ``(heads, v_dims)``. Any
    other has equal dims, read from ``qkv``'s declared width (:func:`_head_dims`), and is
    split by the original reshape (what the channel tracer sees)."""
    B, N, _ = qkv.shape
    if getattr(self, 'v_dims', None) is None:
        head_dims = _head_dims(self.qkv, 3 * self.num_heads)
        qkv = qkv.reshape(B, N, 3, self.num_heads, head_dims).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]
    qk_width = self.num_heads * self.qk_dims
    q, k, v = qkv.split([qk_width, qk_width, self.num_heads * self.v_dims], dim=-1)
    return tuple(t.reshape(B, N, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))


def heads_width(self) -> int:
    """The features of the heads' merged output (``proj``'s input): heads times v dims."""
    v_dims = getattr(self, 'v_dims', None)
    return self.num_heads * (_head_dims(self.qkv, 3 * self.num_heads) if v_dims is None
                             else v_dims)


def qv_bias(self) -> Optional[torch.Tensor]:
    """``[q_bias | 0 | v_bias]``, the bias an attention with ``q_bias`` / ``v_bias`` adds to
    ``qkv``'s output (``None`` without them). In a search model whose heads are searched it is
    masked by ``qkv``'s DMS output mask too: ``qkv``'s own bias is masked with its weight rows,
    this one is added after ``qkv`` and would give a pruned q / v feature a value."""
    if getattr(self, 'q_bias', None) is None:
        return None
    bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias, requires_grad=False),
                      self.v_bias))
    mask = getattr(self.qkv, 'dms_output_mask', None)
    return bias if mask is None else bias * mask().to(bias.dtype)


def window_msa_forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None):
    """``WindowMSA.forward`` with the head width taken from ``qkv``'s declared width, not
    ``x`` (or, exported with searched heads, from its ``qk_dims`` / ``v_dims``)."""
    B_, N, _ = x.shape
    q, k, v = split_heads(self, self.qkv(x))
    q = q * self.scale
    attn = q @ k.transpose(-2, -1)
    relative_position_bias = self.relative_position_bias_table[
        self.relative_position_index.view(-1)].view(
            self.window_size[0] * self.window_size[1],
            self.window_size[0] * self.window_size[1], -1)
    relative_position_bias = relative_position_bias.permute(2, 0, 1).contiguous()
    attn = attn + relative_position_bias.unsqueeze(0)
    if mask is not None:
        nW = mask.shape[0]
        attn = attn.view(B_ // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, self.num_heads, N, N)
    attn = self.attn_drop(self.softmax(attn))
    x = (attn @ v).transpose(1, 2).reshape(B_, N, heads_width(self))
    return self.proj_drop(self.proj(x))


def beit_attention_forward(self, x: torch.Tensor,
                           rel_pos_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``BEiTAttention.forward`` with the heads merged to their own width, not ``x``'s.

    In a search model whose heads are searched (``qkv`` has a DMS output mask) ``qkv`` is
    called as a layer, so that the mask applies, and the q / v biases are masked alike
    (:func:`qv_bias`); the original computes ``F.linear`` on ``qkv``'s weight. A static model
    exported with searched heads reads the kept heads of a shared relative position bias
    (``kept_heads``, set by the export)."""
    B, N, _ = x.shape
    if self.bias != 'qv_bias':
        qkv = self.qkv(x)
    elif getattr(self.qkv, 'dms_output_mask', None) is not None:
        qkv = self.qkv(x) + qv_bias(self)
    else:
        qkv = F.linear(input=x, weight=self.qkv.weight, bias=qv_bias(self))
    q, k, v = split_heads(self, qkv)
    q = q * self.scale
    attn = q @ k.transpose(-2, -1)
    if self.relative_position_bias_table is not None:
        Wh, Ww = self.window_size
        relative_position_bias = self.relative_position_bias_table[
            self.relative_position_index.view(-1)].view(Wh * Ww + 1, Wh * Ww + 1, -1)
        relative_position_bias = relative_position_bias.permute(2, 0, 1).contiguous()
        attn = attn + relative_position_bias.unsqueeze(0)
    if rel_pos_bias is not None:
        if rel_pos_bias.shape[0] != self.num_heads:  # the backbone's, shared by every layer
            rel_pos_bias = rel_pos_bias[self.kept_heads]
        attn = attn + rel_pos_bias
    attn = self.attn_drop(attn.softmax(dim=-1))
    x = (attn @ v).transpose(1, 2).reshape(B, N, heads_width(self))
    return self.proj_drop(self.proj(x))


def xca_forward(self, x: torch.Tensor) -> torch.Tensor:
    """``XCA.forward`` (XCiT's cross-covariance attention) with the head width taken from
    ``qkv``'s output, not ``x``."""
    B, N, _ = x.shape
    head_dims = _head_dims(self.qkv, 3 * self.num_heads)
    qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, head_dims).permute(2, 0, 3, 4, 1)
    q, k, v = qkv.unbind(0)
    q = F.normalize(q, dim=-1)
    k = F.normalize(k, dim=-1)
    attn = self.attn_drop(((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1))
    x = (attn @ v).permute(0, 3, 1, 2).reshape(B, N, self.num_heads * head_dims)
    return self.proj_drop(self.proj(x))


def class_attention_forward(self, x: torch.Tensor) -> torch.Tensor:
    """``ClassAttntion.forward`` (XCiT's class attention) with the head width taken from its
    ``q`` / ``k`` / ``v`` outputs, not ``x`` (exported with searched heads: its ``qk_dims`` /
    ``v_dims``)."""
    B, N, _ = x.shape
    qk_dims = getattr(self, 'qk_dims', None) or _head_dims(self.q, self.num_heads)
    v_dims = getattr(self, 'v_dims', None) or _head_dims(self.v, self.num_heads)
    q = self.q(x[:, 0]).unsqueeze(1).reshape(B, 1, self.num_heads, qk_dims).permute(0, 2, 1, 3)
    k = self.k(x).reshape(B, N, self.num_heads, qk_dims).permute(0, 2, 1, 3)
    q = q * self.scale
    v = self.v(x).reshape(B, N, self.num_heads, v_dims).permute(0, 2, 1, 3)
    attn = self.attn_drop((q @ k.transpose(-2, -1)).softmax(dim=-1))
    x_cls = (attn @ v).transpose(1, 2).reshape(B, 1, self.num_heads * v_dims)
    return self.proj_drop(self.proj(x_cls))


class _StreamFreeAdapter(FamilyAdapter):
    """An attention whose own forward reads the stream width: ``forward`` (the same function
    with the head widths read from its layers) for the channel analyzer's copy and, through
    the class ``pruned`` (same state), for the static model."""

    match_subclasses = False
    forward = None
    pruned: type = None

    def trace_forward(self, module: nn.Module, *args, **kwargs):
        return type(self).forward(module, *args, **kwargs)

    def static_rule(self, module: nn.Module, name: str, subnet: Dict) -> None:
        if type(module) is not self.pruned:
            module.__class__ = self.pruned


class PrunedHeadsMixin:
    """A static attention with the heads and qk / v head dims DMS kept (:meth:`convert_from`).

    Its softmax scale stays the supernet's (``scale``, ``head_dims ** -0.5``; a cosine
    attention's ``logit_scale`` per kept head), so it computes exactly what the hard-masked
    search model does.

    Attributes:
        per_head_params (dict): parameter -> its heads axis, sliced by the export (free
            parameters of the search space) and checked here.
    """

    per_head_params: Dict[str, int] = {}

    @classmethod
    def convert_from(cls, attn: nn.Module, num_heads: int, qk_dims: int, v_dims: int):
        """Turn ``attn`` (``qkv``, ``proj`` and its per-head parameters already sliced) into
        the pruned attention, in place: same submodules, same state-dict keys."""
        for param, axis in cls.per_head_params.items():
            value = getattr(attn, param, None)
            if isinstance(value, torch.Tensor) and value.shape[axis] != num_heads:
                raise ValueError(f'{param} has {value.shape[axis]} heads on axis {axis}, the '
                                 f'pruned attention {num_heads}')
        set_pruned_heads(attn, num_heads, qk_dims, v_dims)
        attn.__class__ = cls
        return attn


class PrunedWindowMSA(PrunedHeadsMixin, WindowMSA):
    """A static ``WindowMSA`` whose stream may be narrower than its heads (same state) and,
    converted by :meth:`convert_from`, with the heads and qk / v head dims DMS kept:
    ``relative_position_bias_table`` is sliced to the kept heads by the export (a free
    parameter with the heads on its last axis); the shift mask does not depend on the heads.
    """

    forward = window_msa_forward
    per_head_params = {'relative_position_bias_table': -1}


class PrunedBEiTAttention(PrunedHeadsMixin, BEiTAttention):
    """A static ``BEiTAttention`` whose stream may be narrower than its heads (same state) and,
    converted by :meth:`convert_from`, with the heads and qk / v head dims DMS kept (its
    ``q_bias`` / ``v_bias`` and relative position bias table sliced by the export)."""

    forward = beit_attention_forward
    per_head_params = {'relative_position_bias_table': -1}


class DMSBEiTAttention(BEiTAttention):
    """A search model's ``BEiTAttention`` whose heads are searched (same state): with q / v
    biases, its own forward computes ``F.linear`` on ``qkv``'s weight, which the heads' mask
    on ``qkv`` would not reach (:func:`beit_attention_forward`)."""

    forward = beit_attention_forward


class _SearchedHeadsAdapter(_StreamFreeAdapter):
    """A stream-free attention whose heads and qk / v head dims DMS also searches
    (:mod:`~mmdms.models.adapters.searched_attention`): the channel tracer still enters it
    (its ``qkv`` reads and its ``proj`` writes the traced stream), then :meth:`build_space`
    masks ``qkv``'s output rows ``(3, heads, head_dims)`` and ``proj``'s input, and the export
    makes it its ``pruned`` class with the kept heads and dims.

    qk and v dims are separate widths, as in the ViT space: the pruned forward splits ``qkv``'s
    output into ``[q | k | v]`` sections (:func:`split_heads`) instead of reshaping it to
    ``(3, heads, head_dims)``, which is as exact and keeps one more degree of freedom; tying
    them would save nothing at export.

    Attributes:
        head_lambda_scale (float): temperature scale of the head-count mutables (paper: 4).
        search_class (type, optional): the class the search model's attention becomes (same
            state), where its own forward would bypass the masks.
        search_dims (bool): whether the head dims are searched too; False where a zeroed dim
            is not a removed one (a softmax over the dims), which whole heads still are.
    """

    build_after_trace = True
    head_lambda_scale = 4.0
    search_class: Optional[type] = None
    search_dims = True

    def build_space(self, model: nn.Module, name: str, space, width_args: Dict) -> None:
        attention = add_traced_attention(model, name, space, width_args,
                                         self.head_lambda_scale,
                                         dict(self.pruned.per_head_params),
                                         search_dims=self.search_dims)
        if attention is None:
            return
        self.extra_space(model, name, space, attention)
        if self.search_class is not None:
            model.get_submodule(name).__class__ = self.search_class

    def extra_space(self, model: nn.Module, name: str, space, attention) -> None:
        """What else of attention ``name`` its heads (``attention``, an
        :class:`~mmdms.models.search_space.AttentionMasks`) search: by default its ``q_bias``
        / ``v_bias`` (laid out ``(heads, qk_dims)`` / ``(heads, v_dims)``), if it has them."""
        attn = model.get_submodule(name)
        if getattr(attn, 'q_bias', None) is not None:
            space.add_param(f'{name}.q_bias', HeadsDimsMask(attention.heads, attention.qk_dims))
            space.add_param(f'{name}.v_bias', HeadsDimsMask(attention.heads, attention.v_dims))

    def static_rule(self, module: nn.Module, name: str, subnet: Dict) -> None:
        if not convert_searched_attention(module, name, subnet, self.pruned):
            super().static_rule(module, name, subnet)


class PrunedXCA(PrunedHeadsMixin, XCA):
    """A static ``XCA`` whose stream may be narrower than its heads (same state) and,
    converted by :meth:`convert_from`, with the heads DMS kept (its ``temperature``, one per
    head, sliced by the export); every head keeps its dims."""

    forward = xca_forward
    per_head_params = {'temperature': 0}


@register_layer_rule
class CrossCovarianceAttentionRule(AttentionRule):
    """An attention over the head dims (XCiT's ``XCA``; DaViT's channel attention): per head a
    ``(qk, N) x (N, qk)`` product and a ``(qk, qk) x (v, N)`` one, ``heads * qk * (qk + v) * N``
    MACs (``qk == v``: their dims pair up)."""

    module_types = (XCA, )

    def macs(self, call: LayerCall, widths: tuple):
        heads, qk, v = widths
        return heads * qk * (qk + v) * call.positions


@ADAPTERS.register_module()
class XCAAdapter(_SearchedHeadsAdapter):
    """XCiT's cross-covariance attention: its stream and its heads. Its head dims stay: its
    softmax runs over them, where a zeroed dim is not a removed one; a whole pruned head has
    zero q, k and v (``F.normalize`` keeps a zero vector zero), so its output is zero."""

    module_type = XCA
    forward = staticmethod(xca_forward)
    pruned = PrunedXCA
    search_dims = False


class PrunedClassAttntion(PrunedHeadsMixin, ClassAttntion):
    """A static ``ClassAttntion`` whose stream may be narrower than its heads (same state)
    and, converted by :meth:`convert_from`, with the heads and qk / v head dims DMS kept."""

    forward = class_attention_forward


@register_layer_rule
class ClassAttentionRule(AttentionRule):
    """XCiT's ``ClassAttntion``: one query (the class token) attends to all ``N`` tokens,
    ``heads * (qk + v) * N`` MACs."""

    module_types = (ClassAttntion, )

    def record(self, name: str, module: nn.Module, x: torch.Tensor, out) -> LayerCall:
        return LayerCall(name, self.kind, x.shape[-1], x.shape[-1], 1,
                         in_shape=tuple(x.shape[1:]))


@ADAPTERS.register_module()
class ClassAttntionAdapter(_SearchedHeadsAdapter):
    """XCiT's class attention: its stream, heads and qk / v head dims (``q``, ``k`` and ``v``
    are three linears)."""

    module_type = ClassAttntion
    forward = staticmethod(class_attention_forward)
    pruned = PrunedClassAttntion


@ADAPTERS.register_module()
class WindowMSAAdapter(_SearchedHeadsAdapter):
    """Swin's window attention (``WindowMSAV2`` computes its heads otherwise): its stream,
    heads and head dims; windowed and shifted (the shift mask is per window, not per head)."""

    module_type = WindowMSA
    forward = staticmethod(window_msa_forward)
    pruned = PrunedWindowMSA


def window_msa_v2_forward(self, x: torch.Tensor,
                          mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``WindowMSAV2.forward`` with the head width taken from ``qkv``'s declared width, and
    ``qkv`` called as a layer: the original computes ``F.linear(x, self.qkv.weight, qkv_bias)``
    itself, which the channel tracer does not see as a call of ``qkv`` (the stream it reads
    stayed unsearched). ``qkv`` has no bias of its own; its bias is added after it."""
    B_, N, _ = x.shape
    qkv = self.qkv(x)
    bias = qv_bias(self)
    if bias is not None:
        qkv = qkv + bias
    q, k, v = split_heads(self, qkv)
    attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
    attn = attn * torch.clamp(self.logit_scale, max=math.log(1. / 0.01)).exp()
    relative_position_bias_table = self.cpb_mlp(self.relative_coords_table).view(
        -1, self.num_heads)
    window = self.window_size[0] * self.window_size[1]
    relative_position_bias = relative_position_bias_table[
        self.relative_position_index.view(-1)].view(window, window, -1)
    relative_position_bias = relative_position_bias.permute(2, 0, 1).contiguous()
    attn = attn + 16 * torch.sigmoid(relative_position_bias).unsqueeze(0)
    if mask is not None:
        nW = mask.shape[0]
        attn = attn.view(B_ // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, self.num_heads, N, N)
    attn = self.attn_drop(self.softmax(attn))
    x = (attn @ v).transpose(1, 2).reshape(B_, N, heads_width(self))
    return self.proj_drop(self.proj(x))


class PrunedWindowMSAV2(PrunedHeadsMixin, WindowMSAV2):
    """A static ``WindowMSAV2`` whose stream may be narrower than its heads (same state) and,
    converted by :meth:`convert_from`, with the heads and qk / v head dims DMS kept: ``q_bias``,
    ``v_bias``, ``logit_scale`` (axis 0) and ``cpb_mlp``'s last linear (the per-head bias
    table it computes) sliced to them by the export."""

    forward = window_msa_v2_forward
    per_head_params = {'logit_scale': 0}


class DMSWindowMSAV2(WindowMSAV2):
    """A search model's ``WindowMSAV2`` whose heads are searched (same state): it calls
    ``qkv`` as a layer, so that its DMS op applies the heads' mask, and masks the q / v
    biases alike (:func:`qv_bias`); the original computes ``F.linear`` on ``qkv``'s weight."""

    forward = window_msa_v2_forward


@ADAPTERS.register_module()
class WindowMSAV2Adapter(_SearchedHeadsAdapter):
    """Swin-V2's window attention: its stream, heads and qk / v head dims (cosine attention:
    a pruned qk dim is left out of the norms, a pruned head's values are zero); the heads
    also search ``q_bias`` / ``v_bias``, ``logit_scale`` and the rows of ``cpb_mlp``'s last
    linear (one per head)."""

    module_type = WindowMSAV2
    forward = staticmethod(window_msa_v2_forward)
    pruned = PrunedWindowMSAV2
    search_class = DMSWindowMSAV2

    def extra_space(self, model: nn.Module, name: str, space, attention) -> None:
        super().extra_space(model, name, space, attention)
        cpb_out = f'{name}.cpb_mlp.{len(model.get_submodule(name).cpb_mlp) - 1}'
        space.set_layer_masks(cpb_out, out_mask=mutable_mask(attention.heads))
        space.widths[f'{name}.heads'].layers.append(cpb_out)


@ADAPTERS.register_module()
class BEiTAttentionAdapter(_SearchedHeadsAdapter):
    """BEiT's attention (BEiT, EVA): its stream, heads and qk / v head dims, with its q / v
    biases and relative position bias table. A relative position bias shared by all layers
    (the backbone's) stays whole; each exported layer reads its kept heads of it."""

    module_type = BEiTAttention
    forward = staticmethod(beit_attention_forward)
    pruned = PrunedBEiTAttention
    search_class = DMSBEiTAttention

    def static_rule(self, module: nn.Module, name: str, subnet: Dict) -> None:
        super().static_rule(module, name, subnet)
        spec = subnet.get('attentions', {}).get(name)
        if spec is not None:
            module.kept_heads = list(spec['heads']['indices'])


def hivit_attention_forward(self, x: torch.Tensor, rpe_index: Optional[torch.Tensor] = None,
                            mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """HiViT's ``Attention.forward`` with the head width taken from ``qkv``'s output (or,
    exported with searched heads, from its ``qk_dims`` / ``v_dims``)."""
    B, N, _ = x.shape
    q, k, v = split_heads(self, self.qkv(x))
    q = q * self.scale
    attn = q @ k.transpose(-2, -1)
    if rpe_index is not None:
        rpe_index = self.relative_position_index.view(-1)
        S = int(math.sqrt(rpe_index.size(-1)))
        relative_position_bias = self.relative_position_bias_table[rpe_index].view(
            -1, S, S, self.num_heads)
        attn = attn + relative_position_bias.permute(0, 3, 1, 2).contiguous()
    if mask is not None:
        mask = mask.bool()
        attn = attn.masked_fill(~mask[:, None, None, :], float('-inf'))
    attn = self.attn_drop(self.softmax(attn))
    x = (attn @ v).transpose(1, 2).reshape(B, N, heads_width(self))
    return self.proj_drop(self.proj(x))


class PrunedHiViTAttention(PrunedHeadsMixin, HiViTAttention):
    """A static HiViT ``Attention`` whose stream may be narrower than its heads and,
    converted by :meth:`convert_from`, with the heads and qk / v head dims DMS kept (its
    relative position bias table sliced to them by the export)."""

    forward = hivit_attention_forward
    per_head_params = {'relative_position_bias_table': -1}


@ADAPTERS.register_module()
class HiViTAttentionAdapter(_SearchedHeadsAdapter):
    """HiViT's attention: its stream, heads and qk / v head dims."""

    module_type = HiViTAttention
    forward = staticmethod(hivit_attention_forward)
    pruned = PrunedHiViTAttention


def gsa_forward(self, x: torch.Tensor, hw_shape) -> torch.Tensor:
    """Twins' ``GlobalSubsampledAttention.forward`` with ``q``'s head width read from ``q``;
    exported with searched heads, with its ``qk_dims`` / ``v_dims`` (``kv`` writes
    ``[k | v]``) and the supernet's softmax scale (``scale``)."""
    B, N, C = x.shape
    pruned = getattr(self, 'v_dims', None) is not None
    q_dims = self.qk_dims if pruned else _head_dims(self.q, self.num_heads)
    q = self.q(x).reshape(B, N, self.num_heads, q_dims).permute(0, 2, 1, 3)
    if self.sr_ratio > 1:
        x = x.permute(0, 2, 1).reshape(B, C, *hw_shape)
        x = self.sr(x)
        x = x.reshape(B, x.shape[1], -1).permute(0, 2, 1)
        x = self.norm(x)
    attn_drop = self.attn_drop if self.training else 0.
    if pruned:
        k, v = self.kv(x).split([self.num_heads * self.qk_dims, self.num_heads * self.v_dims],
                                dim=-1)
        k = k.reshape(B, -1, self.num_heads, self.qk_dims).transpose(1, 2)
        v = v.reshape(B, -1, self.num_heads, self.v_dims).transpose(1, 2)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=attn_drop, scale=self.scale)
        x = x.transpose(1, 2).reshape(B, N, self.num_heads * self.v_dims)
    else:
        kv = self.kv(x).reshape(B, -1, 2, self.num_heads,
                                self.head_dims).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        x = self.scaled_dot_product_attention(q, k, v, dropout_p=attn_drop)
        x = x.transpose(1, 2).reshape(B, N, self.embed_dims)
    x = self.out_drop(self.proj_drop(self.proj(x)))
    if self.v_shortcut:
        x = v.squeeze(1) + x
    return x


def lsa_forward(self, x: torch.Tensor, hw_shape) -> torch.Tensor:
    """Twins' ``LocallyGroupedSelfAttention.forward`` with the head width read from ``qkv``."""
    B, N, C = x.shape
    H, W = hw_shape
    x = x.view(B, H, W, C)
    pad_r = (self.window_size - W % self.window_size) % self.window_size
    pad_b = (self.window_size - H % self.window_size) % self.window_size
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    Hp, Wp = x.shape[1:-1]
    _h, _w = Hp // self.window_size, Wp // self.window_size
    mask = torch.zeros((1, Hp, Wp), device=x.device)
    mask[:, -pad_b:, :].fill_(1)
    mask[:, :, -pad_r:].fill_(1)
    x = x.reshape(B, _h, self.window_size, _w, self.window_size, C).transpose(2, 3)
    mask = mask.reshape(1, _h, self.window_size, _w, self.window_size).transpose(2, 3).reshape(
        1, _h * _w, self.window_size * self.window_size)
    attn_mask = mask.unsqueeze(2) - mask.unsqueeze(3)
    attn_mask = attn_mask.masked_fill(attn_mask != 0, float(-1000.0)).masked_fill(
        attn_mask == 0, float(0.0))
    tokens = self.window_size * self.window_size
    if getattr(self, 'v_dims', None) is None:
        head_dims = _head_dims(self.qkv, 3 * self.num_heads)
        qkv = self.qkv(x).reshape(B, _h * _w, tokens, 3, self.num_heads,
                                  head_dims).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv[0], qkv[1], qkv[2]
        width = self.num_heads * head_dims
    else:  # exported with searched heads: [q | k | v] of qk, qk and v dims per head
        qk_width, width = self.num_heads * self.qk_dims, self.num_heads * self.v_dims
        q, k, v = (t.reshape(B, _h * _w, tokens, self.num_heads, -1).permute(0, 1, 3, 2, 4)
                   for t in self.qkv(x).split([qk_width, qk_width, width], dim=-1))
    attn = (q @ k.transpose(-2, -1)) * self.scale
    attn = self.attn_drop((attn + attn_mask.unsqueeze(2)).softmax(dim=-1))
    attn = (attn @ v).transpose(2, 3).reshape(B, _h, _w, self.window_size, self.window_size,
                                              width)
    x = attn.transpose(2, 3).reshape(B, _h * self.window_size, _w * self.window_size, width)
    if pad_r > 0 or pad_b > 0:
        x = x[:, :H, :W, :].contiguous()
    x = x.reshape(B, N, width)
    return self.proj_drop(self.proj(x))


class PrunedGlobalSubsampledAttention(PrunedHeadsMixin, GlobalSubsampledAttention):
    """A static Twins GSA whose stream may be narrower than its heads and, converted by
    :meth:`convert_from`, with the heads and qk / v head dims DMS kept (``q`` and ``kv`` sliced
    by the export) and the supernet's softmax scale."""

    forward = gsa_forward

    @classmethod
    def convert_from(cls, attn: nn.Module, num_heads: int, qk_dims: int, v_dims: int):
        scale = attention_scale(attn)  # of the full head dims, read before the change
        super().convert_from(attn, num_heads, qk_dims, v_dims)
        attn.scale = scale
        return attn


class PrunedLocallyGroupedSelfAttention(PrunedHeadsMixin, LocallyGroupedSelfAttention):
    """A static Twins LSA whose stream may be narrower than its heads and, converted by
    :meth:`convert_from`, with the heads and qk / v head dims DMS kept (its ``scale`` is the
    supernet's)."""

    forward = lsa_forward


def _hw_shape(args: tuple, kwargs: dict) -> Tuple[int, int]:
    """The ``hw_shape`` argument of a Twins attention's call."""
    return tuple(args[1] if len(args) > 1 else kwargs['hw_shape'])


@register_layer_rule
class SubsampledAttentionRule(AttentionRule):
    """Twins' ``GlobalSubsampledAttention``: each of the ``N`` queries attends to the ``M``
    keys of the feature map sub-sampled by its ``sr`` conv (kernel = stride = ``sr``:
    ``M = (H // sr) (W // sr)``; ``M = N`` without it), ``heads * (qk + v) * N * M`` MACs."""

    module_types = (GlobalSubsampledAttention, )

    def record_call(self, name: str, module: nn.Module, args: tuple, kwargs: dict,
                    out) -> LayerCall:
        x = first_input(args, kwargs)
        H, W = _hw_shape(args, kwargs)
        sr = module.sr_ratio
        keys = (H // sr) * (W // sr) if sr > 1 else x.shape[1]
        return LayerCall(name, self.kind, module.embed_dims, module.embed_dims, x.shape[1],
                         in_shape=(keys, x.shape[-1]))


@register_layer_rule
class LocalWindowAttentionRule(AttentionRule):
    """Twins' ``LocallyGroupedSelfAttention``: the ``H x W`` map is padded to whole windows of
    ``ws x ws`` tokens, each attending within its window: ``heads * (qk + v) * ws^4`` MACs per
    window, ``ceil(H / ws) ceil(W / ws)`` windows (padded tokens counted, as they are
    computed)."""

    module_types = (LocallyGroupedSelfAttention, )

    def record_call(self, name: str, module: nn.Module, args: tuple, kwargs: dict,
                    out) -> LayerCall:
        x = first_input(args, kwargs)
        H, W = _hw_shape(args, kwargs)
        size = module.window_size
        windows = math.ceil(H / size) * math.ceil(W / size)
        return LayerCall(name, self.kind, module.embed_dims, module.embed_dims,
                         windows * size * size, in_shape=(size * size, x.shape[-1]))


@ADAPTERS.register_module()
class GlobalSubsampledAttentionAdapter(_SearchedHeadsAdapter):
    """Twins' global sub-sampled attention: its stream, heads and qk / v head dims (``q``
    writes ``(heads, qk)``, ``kv`` ``[k | v]``; the heads of one with ``v_shortcut``, which
    adds its values to its output, stay fixed)."""

    module_type = GlobalSubsampledAttention
    forward = staticmethod(gsa_forward)
    pruned = PrunedGlobalSubsampledAttention

    def build_space(self, model: nn.Module, name: str, space, width_args: Dict) -> None:
        if not getattr(model.get_submodule(name), 'v_shortcut', False):
            super().build_space(model, name, space, width_args)


@ADAPTERS.register_module()
class LocallyGroupedSelfAttentionAdapter(_SearchedHeadsAdapter):
    """Twins' locally grouped (windowed, padded) attention: its stream, heads and qk / v
    head dims."""

    module_type = LocallyGroupedSelfAttention
    forward = staticmethod(lsa_forward)
    pruned = PrunedLocallyGroupedSelfAttention


def channel_attention_forward(self, x: torch.Tensor) -> torch.Tensor:
    """``ChannelMultiheadAttention.forward`` (EdgeNeXt's SDTA: attention across channels) with
    the heads split off ``qkv``'s last axis (``unflatten``) and merged back with ``flatten``,
    reading no size of ``x``."""
    head_dims = _head_dims(self.qkv, 3 * self.num_heads)
    qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, head_dims)).permute(2, 0, 3, 1, 4)
    q, k, v = [item.transpose(-2, -1) for item in qkv.unbind(0)]
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
    out = (attn @ v).permute(0, 3, 1, 2).flatten(2)
    out = self.out_drop(self.proj_drop(self.proj(out)))
    if self.v_shortcut:
        out = qkv[2].squeeze(1) + out
    return out


class PrunedChannelMultiheadAttention(PrunedHeadsMixin, ChannelMultiheadAttention):
    """A static ``ChannelMultiheadAttention`` whose stream may be narrower than its heads (same
    state) and, converted by :meth:`convert_from`, with the heads DMS kept (a learnable
    ``scale``, one per head, sliced by the export); every head keeps its dims."""

    forward = channel_attention_forward
    per_head_params = {'scale': 0}


@register_layer_rule
class ChannelMultiheadAttentionRule(CrossCovarianceAttentionRule):
    """EdgeNeXt's channel attention: an attention over the head dims, as XCiT's."""

    module_types = (ChannelMultiheadAttention, )


@ADAPTERS.register_module()
class ChannelMultiheadAttentionAdapter(_SearchedHeadsAdapter):
    """EdgeNeXt's channel attention: its stream and its heads; its head dims stay (its softmax
    runs over them, see :class:`~.searched_attention.FixedDims`). With ``v_shortcut`` (the
    values added to the output, one head) the heads stay too."""

    module_type = ChannelMultiheadAttention
    forward = staticmethod(channel_attention_forward)
    pruned = PrunedChannelMultiheadAttention
    search_dims = False

    def build_space(self, model: nn.Module, name: str, space, width_args: Dict) -> None:
        if not model.get_submodule(name).v_shortcut:
            super().build_space(model, name, space, width_args)
