# Copyright (c) mmdms contributors. All rights reserved.
"""mmpretrain attentions whose forward reads the stream width from its input.

``WindowMSA.forward`` (Swin) splits ``qkv``'s output into heads of ``C // num_heads`` features and
merges them back with ``reshape(B_, N, C)``, ``C`` being its *input's* width. That is the
attention's width only while the stream is not pruned: once the stream keeps ``C' < C`` channels
(``qkv`` reads ``C'``, still writes ``3 C``), the reshape fails. So MMRazor's pruning check
(which runs a pruned copy) kept every Swin stream fixed, and a static Swin with a pruned stream
could not run. Here the head width is read from ``qkv``'s output and the merged width from the
heads, which is the same function of the same weights at every stream width.
``BEiTAttention`` (BEiT, EVA) merges its heads with ``reshape(B, N, C)`` alike.
"""
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.utils.attention import BEiTAttention, WindowMSA

from mmdms.registry import ADAPTERS
from .base import FamilyAdapter


def window_msa_forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None):
    """``WindowMSA.forward`` with the head width taken from ``qkv``'s output, not ``x``."""
    B_, N, _ = x.shape
    qkv = self.qkv(x)
    head_dims = qkv.shape[-1] // (3 * self.num_heads)
    qkv = qkv.reshape(B_, N, 3, self.num_heads, head_dims).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
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
    x = (attn @ v).transpose(1, 2).reshape(B_, N, self.num_heads * v.shape[-1])
    return self.proj_drop(self.proj(x))


@ADAPTERS.register_module()
class WindowMSAAdapter(FamilyAdapter):
    """Swin's window attention: the forward above for the channel analyzer's copy (so its
    pruning check can prune the stream) and for the static model (whose stream is pruned)."""

    module_type = WindowMSA
    match_subclasses = False  # WindowMSAV2 and others compute their heads otherwise

    def trace_forward(self, module: nn.Module, x: torch.Tensor,
                      mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return window_msa_forward(module, x, mask)

    def static_rule(self, module: nn.Module, name: str, subnet: Dict) -> None:
        if type(module) is not PrunedWindowMSA:
            module.__class__ = PrunedWindowMSA


class PrunedWindowMSA(WindowMSA):
    """A static ``WindowMSA`` whose stream may be narrower than its heads (same state)."""

    forward = window_msa_forward


def beit_attention_forward(self, x: torch.Tensor,
                           rel_pos_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``BEiTAttention.forward`` with the heads merged to their own width, not ``x``'s."""
    B, N, _ = x.shape
    if self.bias == 'qv_bias':
        k_bias = torch.zeros_like(self.v_bias, requires_grad=False)
        qkv_bias = torch.cat((self.q_bias, k_bias, self.v_bias))
        qkv = F.linear(input=x, weight=self.qkv.weight, bias=qkv_bias)
    else:
        qkv = self.qkv(x)
    qkv = qkv.reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    q = q * self.scale
    attn = q @ k.transpose(-2, -1)
    if self.relative_position_bias_table is not None:
        Wh, Ww = self.window_size
        relative_position_bias = self.relative_position_bias_table[
            self.relative_position_index.view(-1)].view(Wh * Ww + 1, Wh * Ww + 1, -1)
        relative_position_bias = relative_position_bias.permute(2, 0, 1).contiguous()
        attn = attn + relative_position_bias.unsqueeze(0)
    if rel_pos_bias is not None:
        attn = attn + rel_pos_bias
    attn = self.attn_drop(attn.softmax(dim=-1))
    x = (attn @ v).transpose(1, 2).reshape(B, N, self.num_heads * v.shape[-1])
    return self.proj_drop(self.proj(x))


@ADAPTERS.register_module()
class BEiTAttentionAdapter(FamilyAdapter):
    """BEiT's attention (BEiT, EVA): as :class:`WindowMSAAdapter`."""

    module_type = BEiTAttention
    match_subclasses = False

    def trace_forward(self, module: nn.Module, x: torch.Tensor,
                      rel_pos_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        return beit_attention_forward(module, x, rel_pos_bias)

    def static_rule(self, module: nn.Module, name: str, subnet: Dict) -> None:
        if type(module) is not PrunedBEiTAttention:
            module.__class__ = PrunedBEiTAttention


class PrunedBEiTAttention(BEiTAttention):
    """A static ``BEiTAttention`` whose stream may be narrower than its heads (same state)."""

    forward = beit_attention_forward
