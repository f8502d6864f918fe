# Copyright (c) mmdms contributors. All rights reserved.
"""mmpretrain's EVA-02 layers: their streams and SwiGLU widths for the channel tracer.

EVA-02 (``ViTEVA02``) is a ``VisionTransformer`` whose encoder layers the ViT search space does
not know (a rotary attention, ``AttentionWithRoPE``, and a SwiGLU FFN), so it is traced like
the other token models (:meth:`~.vision_transformer.VisionTransformerAdapter.handles`). Two
forwards hid its widths from MMRazor's channel graph, which follows channels on axis 1:

* ``AttentionWithRoPE`` reads ``B, N, _ = x.shape`` and splits its heads with
  ``qkv.reshape(B, N, 3, num_heads, -1)``: the token count ``N`` (axis 1) was taken for the
  stream's channel count and tied the stream to the heads, which the rotary embedding (its
  tables read as constants) ties to the model's input, so every stream stayed fixed;
* ``SwiGLUFFN`` splits ``w12``'s output into its gate and value halves with
  ``chunk(2, dim=-1)``, a split the graph only follows on axis 1, so the hidden width was cut
  off from ``w3``.

The traceable forwards compute the same functions with the token count left to ``reshape``
(``-1``), the attention cast to ``v``'s dtype rather than ``x``'s (the same one; the original's
``type_as(x)`` tied the stream to the heads too) and the halves split on axis 1 of the tokens
moved there. The heads are searched, the head dims stay (the rotary embedding rotates pairs of
head dims, so a zeroed dim is not a removed one; a whole pruned head has zero q, k and v, so a
zero output: :class:`~.searched_attention.FixedDims`); the static attention is
:class:`PrunedAttentionWithRoPE` with the kept heads, the static FFN keeps mmpretrain's forward,
which reads nothing of the stream or hidden width.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmpretrain.models.backbones.vit_eva02 import AttentionWithRoPE

from mmdms.models.layer_rules import register_layer_rule
from mmdms.registry import ADAPTERS
from .base import FamilyAdapter
from .mmpretrain_stream_attention import PrunedHeadsMixin, _SearchedHeadsAdapter
from .searched_attention import AttentionRule


def rope_attention_forward(self: nn.Module, x: torch.Tensor, patch_resolution) -> torch.Tensor:
    """``AttentionWithRoPE.forward`` with the token count left to ``reshape``."""
    B = x.size(0)
    qkv = self.qkv(x).reshape(B, -1, 3, self.num_heads, self.head_dims).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(dim=0)
    if self.rope:
        if self.with_cls_token:
            ro_q_t = self.rope(q[:, :, 1:, :], patch_resolution)
            q = torch.cat((q[:, :, :1, :], ro_q_t), -2).type_as(v)
            ro_k_t = self.rope(k[:, :, 1:, :], patch_resolution)
            k = torch.cat((k[:, :, :1, :], ro_k_t), -2).type_as(v)
        else:
            q = self.rope(q, patch_resolution)
            k = self.rope(k, patch_resolution)
    q = q * self.scale
    # ``type_as(v)``, not the original's ``type_as(x)``: the same dtype, without an operation
    # that joins the stream ``x`` with the heads in the channel graph
    attn = self.attn_drop((q @ k.transpose(-2, -1)).softmax(dim=-1).type_as(v))
    x = (attn @ v).transpose(1, 2).reshape(B, -1, self.num_heads * self.head_dims)
    return self.proj_drop(self.proj(x))


def swiglu_ffn_forward(self: nn.Module, x: torch.Tensor,
                       identity: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``SwiGLUFFN.forward`` with ``w12``'s halves split on axis 1 (its features moved
    there)."""
    halves = self.w12(x).movedim(-1, 1).chunk(2, dim=1)
    x1, x2 = halves[0].movedim(1, -1), halves[1].movedim(1, -1)
    out = self.dropout_layer(self.gamma2(self.w3(self.norm(F.silu(x1) * x2))))
    if self.out_dims != self.embed_dims or not self.add_identity:
        return out
    return (x if identity is None else identity) + out


class PrunedAttentionWithRoPE(PrunedHeadsMixin, AttentionWithRoPE):
    """A static ``AttentionWithRoPE`` with the heads DMS kept (converted by
    :meth:`convert_from`; each head keeps its dims and the supernet's scale)."""

    forward = rope_attention_forward


@register_layer_rule
class RoPEAttentionRule(AttentionRule):
    """EVA-02's rotary attention: ``heads * (qk + v) * N^2`` MACs (the rotations are
    element-wise, which FlopAnalyzer does not count)."""

    module_types = (AttentionWithRoPE, )


@ADAPTERS.register_module()
class AttentionWithRoPEAdapter(_SearchedHeadsAdapter):
    """EVA-02's rotary attention: its stream and heads (see the module docstring)."""

    module_type = AttentionWithRoPE
    forward = staticmethod(rope_attention_forward)
    pruned = PrunedAttentionWithRoPE
    search_dims = False


@ADAPTERS.register_module()
class SwiGLUFFNAdapter(FamilyAdapter):
    """The SwiGLU FFN of EVA-02 (see the module docstring)."""

    module_type = 'mmpretrain.models.utils.swiglu_ffn.SwiGLUFFN'
    match_subclasses = False

    def trace_forward(self, module: nn.Module, x: torch.Tensor,
                      identity: Optional[torch.Tensor] = None) -> torch.Tensor:
        return swiglu_ffn_forward(module, x, identity)
