# Copyright (c) mmdms contributors. All rights reserved.
"""mmpretrain's LeViT attentions: their heads are split with the token count read from the input.

``Attention.forward`` and ``AttentionSubsample.forward`` start with ``B, N, C = x.shape`` and split
the heads with ``qkv.view(B, N, num_heads, -1)``. MMRazor's channel graph follows channels on
axis 1, so it takes ``N`` (axis 1 of the ``(B, N, C)`` tokens) for the stream's channel count
and ties the stream to the heads' widths; those are in turn tied to the model's input through
the attention biases (``self.ab``, read as a constant), so that every stream width stayed fixed
(55% of the zoo's LeViT-128S searched). The traceable forwards below compute the same function
with the token count left to ``view`` (``-1``), so the stream is searched and the heads and head
dims stay fixed. The static model keeps mmpretrain's forwards, which read nothing of the stream
width.
"""
import torch
import torch.nn as nn
from mmpretrain.models.backbones.levit import Attention, AttentionSubsample

from mmdms.registry import ADAPTERS
from .base import FamilyAdapter


def _attention_biases(module: nn.Module) -> torch.Tensor:
    return (module.attention_biases[:, module.attention_bias_idxs] if module.training
            else module.ab)


def levit_attention_forward(self: Attention, x: torch.Tensor) -> torch.Tensor:
    """``Attention.forward`` with the token count left to ``view``."""
    B = x.size(0)
    q, k, v = self.qkv(x).view(B, -1, self.num_heads, 2 * self.key_dim + self.d).split(
        [self.key_dim, self.key_dim, self.d], dim=3)
    q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
    attn = (q @ k.transpose(-2, -1)) * self.scale + _attention_biases(self)
    attn = attn.softmax(dim=-1)
    x = (attn @ v).transpose(1, 2).reshape(B, -1, self.dh)
    return self.proj(x)


def levit_attention_subsample_forward(self: AttentionSubsample,
                                      x: torch.Tensor) -> torch.Tensor:
    """``AttentionSubsample.forward`` with the token count left to ``view``."""
    B = x.size(0)
    k, v = self.kv(x).view(B, -1, self.num_heads, self.key_dim + self.d).split(
        [self.key_dim, self.d], dim=3)
    k, v = k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
    q = self.q(x).view(B, self.sub_resolution**2, self.num_heads,
                       self.key_dim).permute(0, 2, 1, 3)
    attn = (q @ k.transpose(-2, -1)) * self.scale + _attention_biases(self)
    attn = attn.softmax(dim=-1)
    x = (attn @ v).transpose(1, 2).reshape(B, -1, self.dh)
    return self.proj(x)


@ADAPTERS.register_module()
class LeViTAttentionAdapter(FamilyAdapter):
    """LeViT's attention (see the module docstring)."""

    module_type = Attention
    match_subclasses = False

    def trace_forward(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return levit_attention_forward(module, x)


@ADAPTERS.register_module()
class LeViTAttentionSubsampleAdapter(FamilyAdapter):
    """LeViT's down-sampling attention (see the module docstring)."""

    module_type = AttentionSubsample
    match_subclasses = False

    def trace_forward(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return levit_attention_subsample_forward(module, x)
