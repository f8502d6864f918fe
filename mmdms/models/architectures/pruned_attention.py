# Copyright (c) mmdms contributors. All rights reserved.
"""The static attention of an exported ViT subnet: fewer heads and smaller qk / v head dims
(:func:`set_pruned_heads` also serves the pruned window attentions of
:mod:`mmdms.models.adapters.mmpretrain_stream_attention`)."""
import functools

import torch
import torch.nn.functional as F
from mmpretrain.models.utils.attention import (MultiheadAttention,
                                              scaled_dot_product_attention_pyimpl)
from mmrazor.registry import MODELS


def attention_scale(attn: MultiheadAttention) -> float:
    """The factor ``attn`` (an mmpretrain ``MultiheadAttention``) multiplies ``q k^T`` by.

    ``head_dims ** -0.5``, except where it was built with ``qk_scale`` (T2T-ViT's layers): it
    then calls mmpretrain's Python attention with ``scale=head_dims ** -0.5``, which *divides*
    by it, i.e. multiplies by ``head_dims ** 0.5``. A pruned attention keeps this factor."""
    sdpa = getattr(attn, 'scaled_dot_product_attention', None)
    if isinstance(sdpa, functools.partial) and \
            sdpa.func is scaled_dot_product_attention_pyimpl and sdpa.keywords.get('scale'):
        return 1. / sdpa.keywords['scale']
    return attn.head_dims**-0.5


def set_pruned_heads(attn: torch.nn.Module, num_heads: int, qk_dims: int, v_dims: int) -> None:
    """Give ``attn``, an attention whose ``qkv`` (sliced to ``[q | k | v]`` of
    ``(num_heads, qk_dims)``, ``(num_heads, qk_dims)``, ``(num_heads, v_dims)`` outputs; or a
    ``q`` and a ``kv`` linear, ``[k | v]``; or ``q``, ``k`` and ``v`` linears) and ``proj``
    (``(num_heads, v_dims)`` inputs) are already sliced, those head counts, after checking the
    layers' widths.

    Raises:
        ValueError: ``qkv`` or ``proj`` has other widths.
    """
    if hasattr(attn, 'qkv'):
        expected = dict(qkv=num_heads * (2 * qk_dims + v_dims))
    elif hasattr(attn, 'kv'):  # Twins' sub-sampled attention: q from the tokens, k, v from fewer
        expected = dict(q=num_heads * qk_dims, kv=num_heads * (qk_dims + v_dims))
    else:  # XCiT's class attention: three linears
        expected = dict(q=num_heads * qk_dims, k=num_heads * qk_dims, v=num_heads * v_dims)
    found = {name: getattr(attn, name).out_features for name in expected}
    if found != expected or attn.proj.in_features != num_heads * v_dims:
        raise ValueError(
            f'{found} outputs and proj {attn.proj.in_features} inputs; {num_heads} heads with '
            f'qk dims {qk_dims} and v dims {v_dims} need {expected} and {num_heads * v_dims}')
    attn.num_heads, attn.qk_dims, attn.v_dims = num_heads, qk_dims, v_dims


@MODELS.register_module()
class PrunedMultiheadAttention(MultiheadAttention):
    """mmpretrain's ``MultiheadAttention`` with ``num_heads`` heads whose queries and keys have
    ``qk_dims`` features and values ``v_dims`` (DMS searches the three independently).

    ``qkv`` outputs ``[q | k | v]`` as ``(num_heads, qk_dims)``, ``(num_heads, qk_dims)``,
    ``(num_heads, v_dims)`` and ``proj`` reads ``(num_heads, v_dims)``. The softmax scale stays the
    supernet's (``scale``: ``head_dims ** -0.5``, or what :func:`attention_scale` reads), so
    the pruned attention computes exactly what the hard-masked search model did.

    Built by :meth:`convert_from` from a (sliced) ``MultiheadAttention``; it adds no parameter.
    """

    @classmethod
    def convert_from(cls, attn: MultiheadAttention, num_heads: int, qk_dims: int,
                     v_dims: int) -> 'PrunedMultiheadAttention':
        """Turn ``attn`` (whose ``qkv`` / ``proj`` are already sliced) into the pruned attention,
        in place: same submodules, same state-dict keys."""
        if getattr(attn, 'v_shortcut', False):
            raise NotImplementedError('A pruned attention with v_shortcut is not supported')
        scale = attention_scale(attn)
        set_pruned_heads(attn, num_heads, qk_dims, v_dims)
        attn.__class__ = cls
        attn.scale = scale
        return attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        qk_width = self.num_heads * self.qk_dims
        q, k, v = self.qkv(x).split([qk_width, qk_width, self.num_heads * self.v_dims], dim=-1)
        q = q.reshape(B, N, self.num_heads, self.qk_dims).transpose(1, 2)
        k = k.reshape(B, N, self.num_heads, self.qk_dims).transpose(1, 2)
        v = v.reshape(B, N, self.num_heads, self.v_dims).transpose(1, 2)
        attn_drop = self.attn_drop if self.training else 0.
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=attn_drop, scale=self.scale)
        x = x.transpose(1, 2).reshape(B, N, self.num_heads * self.v_dims)
        x = self.proj(x)
        return self.out_drop(self.gamma1(self.proj_drop(x)))

    def extra_repr(self) -> str:
        return f'num_heads={self.num_heads}, qk_dims={self.qk_dims}, v_dims={self.v_dims}, ' \
               f'scale={self.scale:.4g}'
