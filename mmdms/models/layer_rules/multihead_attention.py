# Copyright (c) mmdms contributors. All rights reserved.
"""``torch.nn.MultiheadAttention`` (wrapped by mmcv's ``MultiheadAttention``: TNT's blocks,
DETR's transformer): a leaf of the trace whose input projection is a bare parameter
(``in_proj_weight``) and whose ``out_proj`` it calls as a function. Without a rule MMRazor's
pruning check kept every stream through one fixed. :class:`TorchMultiheadAttentionRule` makes
its stream prunable: ``in_proj_weight``'s input columns and ``out_proj``'s output rows are
sliced (its heads: :mod:`mmdms.models.adapters.torch_multihead_attention`). A pruned one cannot be a ``torch.nn.MultiheadAttention``
(torch reads the head width from its input's width), so the export makes it a
:class:`PrunedTorchMultiheadAttention`: the same state, the attention written out.
"""
from typing import Optional, Sequence, Set, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmrazor.models.architectures.dynamic_ops import DynamicChannelMixin
from torch import Tensor

from .base import LayerCall, LayerRule, SubnetError, register_layer_rule, select_param


def _unsupported(attn: nn.MultiheadAttention, key_padding_mask=None,
                 attn_mask=None) -> Optional[str]:
    """Why ``attn``'s call cannot be computed by :func:`explicit_attention` (``None``: it can)."""
    if attn.bias_k is not None or attn.add_zero_attn:
        return 'bias_k / add_zero_attn'
    if not attn._qkv_same_embed_dim:
        return 'separate key / value widths'
    return None


def _require_supported(attn: nn.MultiheadAttention, key_padding_mask, attn_mask) -> None:
    """Raise ``NotImplementedError`` for a call :func:`explicit_attention` cannot compute."""
    why = _unsupported(attn, key_padding_mask, attn_mask)
    if why is not None:
        raise NotImplementedError(f'a pruned MultiheadAttention does not support {why}')


def _masked_scores(scores: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Scores with a boolean mask's positions at ``-inf`` (True: not attended), or a float
    mask added, as ``torch.nn.MultiheadAttention`` applies its masks."""
    if mask is None:
        return scores
    if mask.dtype == torch.bool:
        return scores.masked_fill(mask, float('-inf'))
    return scores + mask.to(scores.dtype)


def explicit_attention(attn: nn.MultiheadAttention, query: Tensor, key: Tensor, value: Tensor,
                       in_weight: Tensor, in_bias: Optional[Tensor], out_weight: Tensor,
                       out_bias: Optional[Tensor], key_padding_mask: Optional[Tensor] = None,
                       attn_mask: Optional[Tensor] = None) -> Tensor:
    """``torch.nn.MultiheadAttention``'s output with input projection ``in_weight``
    (``(3 E, C_in)``: ``E`` the heads' width, ``C_in`` the stream's) and output projection
    ``out_weight`` (``(C_out, E)``); the head width is ``E / num_heads``, not the input's.
    ``attn_mask`` (``(L, S)`` or ``(B heads, L, S)``) and ``key_padding_mask`` (``(B, S)``) as
    torch takes them (boolean: True is not attended; float: added to the scores)."""
    if attn.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    length, batch, _ = query.shape
    source = key.shape[0]
    width = in_weight.shape[0] // 3
    head_dims = width // attn.num_heads
    w_q, w_k, w_v = in_weight.chunk(3)
    b_q, b_k, b_v = (None, ) * 3 if in_bias is None else in_bias.chunk(3)
    q = F.linear(query, w_q, b_q).reshape(length, batch * attn.num_heads, head_dims)
    k = F.linear(key, w_k, b_k).reshape(source, batch * attn.num_heads, head_dims)
    v = F.linear(value, w_v, b_v).reshape(source, batch * attn.num_heads, head_dims)
    q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
    scores = torch.bmm(q * head_dims**-0.5, k.transpose(1, 2))
    if attn_mask is not None:
        scores = _masked_scores(scores, attn_mask if attn_mask.dim() == 3 else attn_mask[None])
    if key_padding_mask is not None:
        scores = _masked_scores(scores.view(batch, attn.num_heads, length, source),
                                key_padding_mask.view(batch, 1, 1, source)).view(
                                    batch * attn.num_heads, length, source)
    scores = scores.softmax(dim=-1)
    scores = F.dropout(scores, attn.dropout, attn.training)
    out = torch.bmm(scores, v).transpose(0, 1).reshape(length, batch, width)
    out = F.linear(out, out_weight, out_bias)
    return out.transpose(0, 1) if attn.batch_first else out


class PrunedTorchMultiheadAttention(nn.MultiheadAttention):
    """A static ``torch.nn.MultiheadAttention`` whose stream may be narrower than its heads:
    ``in_proj_weight`` of ``(3 E, C_in)``, ``out_proj`` of ``(C_out, E)`` (same state; made by
    :meth:`TorchMultiheadAttentionRule.prune`). It returns ``(output, None)``."""

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask=None,
                need_weights: bool = True, attn_mask=None, average_attn_weights: bool = True,
                is_causal: bool = False) -> Tuple[Tensor, None]:
        _require_supported(self, key_padding_mask, attn_mask)
        return explicit_attention(self, query, key, value, self.in_proj_weight,
                                  self.in_proj_bias, self.out_proj.weight,
                                  self.out_proj.bias, key_padding_mask, attn_mask), None


class DynamicTorchMultiheadAttention(DynamicChannelMixin, nn.MultiheadAttention):
    """The op of MMRazor's pruning check for ``torch.nn.MultiheadAttention``: the input
    projection's columns sliced to the input channels kept, ``out_proj``'s rows to the output
    channels kept (a call it cannot compute pruned fails the check)."""

    accepted_mutable_attrs: Set[str] = {'in_channels', 'out_channels'}
    attr_mappings = {'in_channels': 'in_channels', 'out_channels': 'out_channels'}

    @property
    def in_channels(self) -> int:
        return self.embed_dim

    @property
    def out_channels(self) -> int:
        return self.out_proj.out_features

    @classmethod
    def convert_from(cls, module: nn.MultiheadAttention) -> 'DynamicTorchMultiheadAttention':
        new = cls.__new__(cls)
        new.__dict__.update(module.__dict__)  # the same parameters and out_proj
        new.mutable_attrs = nn.ModuleDict()
        return new

    def register_mutable_attr(self, attr: str, mutable) -> None:
        if attr not in self.accepted_mutable_attrs:
            raise NotImplementedError(attr)
        self.check_mutable_channels(mutable)
        if mutable.current_mask.size(0) != getattr(self, attr):
            raise ValueError(f'Expect mask size of mutable to be {getattr(self, attr)} as '
                             f'{attr}, but got: {mutable.current_mask.size(0)}.')
        self.mutable_attrs[attr] = mutable

    @property
    def static_op_factory(self):
        return nn.MultiheadAttention

    def to_static_op(self) -> nn.Module:
        raise NotImplementedError('the check op of MultiheadAttention is not exported')

    def _kept(self, attr: str) -> Optional[Tensor]:
        mutable = self.get_mutable_attr(attr)
        return None if mutable is None else mutable.current_mask.bool()

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask=None,
                need_weights: bool = True, attn_mask=None, average_attn_weights: bool = True,
                is_causal: bool = False) -> Tuple[Tensor, None]:
        _require_supported(self, key_padding_mask, attn_mask)
        kept_in, kept_out = self._kept('in_channels'), self._kept('out_channels')
        in_weight = self.in_proj_weight if kept_in is None else self.in_proj_weight[:, kept_in]
        out_weight, out_bias = self.out_proj.weight, self.out_proj.bias
        if kept_out is not None:
            out_weight = out_weight[kept_out]
            out_bias = None if out_bias is None else out_bias[kept_out]
        return explicit_attention(self, query, key, value, in_weight, self.in_proj_bias,
                                  out_weight, out_bias, key_padding_mask, attn_mask), None


class DMSTorchMultiheadAttention(DynamicTorchMultiheadAttention):
    """The DMS op: ``torch.nn.MultiheadAttention`` on query, key and value masked by its input
    mask (with hard masks, the pruned attention's output on its kept channels; the layers
    reading the others mask them) and, where its heads are searched (``dms_heads_mask``, over
    ``in_proj_weight``'s rows ``(3, heads, head_dims)``), with those rows and biases masked: a
    pruned head's q, k and v are zero, so is its output."""

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask=None,
                need_weights: bool = True, attn_mask=None, average_attn_weights: bool = True,
                is_causal: bool = False):
        container = self.get_mutable_attr('in_channels')
        mask = getattr(container, 'soft_mask', None)
        if mask is not None:
            query, key, value = (t * mask.to(t.dtype) for t in (query, key, value))
        kwargs = dict(key_padding_mask=key_padding_mask, need_weights=need_weights,
                      attn_mask=attn_mask, average_attn_weights=average_attn_weights,
                      is_causal=is_causal)
        heads = getattr(self, 'dms_heads_mask', None)
        if heads is None:
            return nn.MultiheadAttention.forward(self, query, key, value, **kwargs)
        # torch's own computation with the heads' rows masked (its forward would read the
        # unmasked parameters); the adapter searches heads only where q, k and v share them
        rows = heads().to(self.in_proj_weight.dtype)
        batched_first = self.batch_first and query.dim() == 3
        if batched_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        out, weights = F.multi_head_attention_forward(
            query, key, value, self.embed_dim, self.num_heads,
            self.in_proj_weight * rows[:, None],
            None if self.in_proj_bias is None else self.in_proj_bias * rows,
            self.bias_k, self.bias_v, self.add_zero_attn, self.dropout, self.out_proj.weight,
            self.out_proj.bias, training=self.training, **kwargs)
        return (out.transpose(0, 1) if batched_first else out), weights


@register_layer_rule
class TorchMultiheadAttentionRule(LayerRule):
    """``torch.nn.MultiheadAttention`` (see the module docstring): input channels (query,
    key and value, one width) and output channels searched; the heads' width ``E`` is the kept
    heads' where an adapter searches them.

    One call: ``positions`` = query tokens ``L`` per sequence (times the sequences of a
    sample, which the estimator finds from ``lead``, the sequences of the call);
    ``in_shape = (L, S_k, S_v, S, k_width, v_width, E, fixed, in_bias)``: key and value
    tokens, the key tokens the scores see (``bias_k`` and ``add_zero_attn`` add one each), the
    key and value widths when they are not the stream's (0 when they are), the heads' width
    ``E`` (scaled by the kept heads where they are searched), the parameters no width scales
    and whether there is an ``in_proj_bias``. MACs per sequence as FlopAnalyzer counts
    ``F.multi_head_attention_forward``
    (:func:`~mmdms.models.task_modules.functional_macs.multi_head_attention_macs`): the
    projections ``L C_q E + S_k C_k E + S_v C_v E``, the two products ``2 L S E`` and the
    output projection ``L E C_out``."""

    module_types = (nn.MultiheadAttention, )
    kind = 'torch_attention'
    dms_ops = {nn.MultiheadAttention: DMSTorchMultiheadAttention}
    check_op = DynamicTorchMultiheadAttention

    def channels(self, module: nn.Module) -> Tuple[int, int]:
        return module.embed_dim, module.out_proj.out_features

    def sliced_sublayers(self, module: nn.Module) -> Tuple[str, ...]:
        return ('out_proj', )

    def record_call(self, name: str, module: nn.Module, args: tuple, kwargs: dict,
                    out) -> LayerCall:
        names = ('query', 'key', 'value')
        query, key, value = (args[i] if len(args) > i else kwargs[names[i]] for i in range(3))
        if query.dim() == 2:  # unbatched
            query, key, value = query[:, None], key[:, None], value[:, None]
        elif module.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        same = module._qkv_same_embed_dim
        width, c_in, c_out = module.embed_dim, module.embed_dim, module.out_proj.out_features
        widths = sum(p.numel() for n, p in module.named_parameters()
                     if n in ('in_proj_weight', 'in_proj_bias', 'out_proj.weight',
                              'out_proj.bias'))
        fixed = sum(p.numel() for p in module.parameters()) - widths
        source = key.shape[0] + (module.bias_k is not None) + bool(module.add_zero_attn)
        return LayerCall(name, self.kind, c_in, c_out, query.shape[0],
                         bias=module.out_proj.bias is not None,
                         in_shape=(query.shape[0], key.shape[0], value.shape[0], source,
                                   0 if same else key.shape[-1],
                                   0 if same else value.shape[-1], width, fixed,
                                   int(module.in_proj_bias is not None)),
                         lead=query.shape[1])

    def widths(self, call: LayerCall, reader) -> tuple:
        """``(c_in, c_out, E)``: the heads' width ``E`` scaled by the kept heads where they are
        searched."""
        c_in, c_out = super().widths(call, reader)
        width = call.in_shape[6]
        attention = reader.space.attentions.get(call.name)
        if attention is not None:
            width = reader.mutable_width(attention.heads) * \
                (width // attention.heads.num_channels)
        return c_in, c_out, width

    def macs(self, call: LayerCall, widths: tuple):
        c_in, c_out, width = widths
        length, keys, values, source, k_width, v_width = call.in_shape[:6]
        sequences = call.positions // length  # per sample (the estimator scaled positions)
        projections = length * c_in + keys * (k_width or c_in) + values * (v_width or c_in)
        return sequences * (projections * width + 2 * length * source * width +
                            length * width * c_out)

    def params(self, call: LayerCall, widths: tuple):
        c_in, c_out, width = widths
        fixed, in_bias = call.in_shape[7:9]
        same = not call.in_shape[4]
        count = fixed + width * c_out + (c_out if call.bias else 0) + (3 * width if in_bias else 0)
        return count + 3 * width * c_in if same else count

    def prune(self, module: nn.Module, kept_in: Optional[Sequence[int]],
              kept_out: Optional[Sequence[int]], name: str) -> None:
        if kept_in is None and kept_out is None:
            return
        why = _unsupported(module, None, None)
        if why is not None:
            raise SubnetError(f"'{name}': a pruned MultiheadAttention does not support {why}")
        select_param(module, 'in_proj_weight', 1, kept_in)
        select_param(module.out_proj, 'weight', 0, kept_out)
        select_param(module.out_proj, 'bias', 0, kept_out)
        module.out_proj.out_features, module.out_proj.in_features = module.out_proj.weight.shape
        module.__class__ = PrunedTorchMultiheadAttention
