# Copyright (c) mmdms contributors. All rights reserved.
"""Attentions with a learnt bias per head and relative offset, LeViT-style: TinyViT's window
attention (mmpretrain's ``LeAttention``) and EfficientFormer's ``AttentionWithBias``; their
heads and qk / v head dims.

Both compute ``qkv`` as ``(heads, [q | k | v])`` features (``key_dim`` q and k dims and ``d`` v
dims per head, split per head after a ``view`` / ``reshape``), add ``attention_biases`` (heads on
axis 0; cached as ``ab`` in eval mode) and read their widths from their own attributes
(``key_dim``, ``d``, ``dh``), not from their input; TinyViT runs its attention on windows
(each window a batch item). The channel tracer enters them (``qkv`` reads and ``proj`` writes
the traced stream) and keeps ``qkv``'s output fixed; the adapter then searches the heads
(``lambda = 4N``) and qk / v dims (:func:`~.searched_attention.add_traced_attention`, per-head
layout; the v dims may differ from the qk dims, EfficientFormer's are 4x), and the export
slices ``qkv`` / ``proj`` / ``attention_biases`` and sets the kept widths; the softmax scale
(``key_dim ** -0.5`` of the supernet) is kept.
"""
from typing import Dict

import torch.nn as nn
from mmpretrain.models.backbones.efficientformer import AttentionWithBias
from mmpretrain.models.utils.attention import LeAttention

from mmdms.registry import ADAPTERS
from .base import FamilyAdapter
from .mmpretrain_stream_attention import PrunedHeadsMixin
from .searched_attention import add_traced_attention, convert_searched_attention


class PrunedBiasedAttentionMixin(PrunedHeadsMixin):
    """A static biased attention with the heads and qk / v head dims DMS kept (same state; its
    forward is the original, which reads them from ``key_dim`` / ``d`` / ``dh``)."""

    per_head_params = {'attention_biases': 0}

    @classmethod
    def convert_from(cls, attn: nn.Module, num_heads: int, qk_dims: int, v_dims: int):
        """Turn ``attn`` (``qkv``, ``proj`` and ``attention_biases`` already sliced) into the
        pruned attention, in place; its eval-mode bias cache follows the sliced biases."""
        super().convert_from(attn, num_heads, qk_dims, v_dims)
        attn.key_dim, attn.d = qk_dims, v_dims
        attn.nh_kd, attn.dh = num_heads * qk_dims, num_heads * v_dims
        if hasattr(attn, 'ab'):
            attn.ab = attn.attention_biases[:, attn.attention_bias_idxs]
        return attn


class PrunedLeAttention(PrunedBiasedAttentionMixin, LeAttention):
    """A static ``LeAttention`` (TinyViT) with the heads and head dims DMS kept."""


class PrunedAttentionWithBias(PrunedBiasedAttentionMixin, AttentionWithBias):
    """A static ``AttentionWithBias`` (EfficientFormer) with the heads and head dims DMS
    kept."""


class _BiasedAttentionAdapter(FamilyAdapter):
    """A biased attention (see the module docstring).

    Attributes:
        head_lambda_scale (float): temperature scale of the head-count mutables (paper: 4).
        pruned (type): its static class with searched heads.
    """

    match_subclasses = False
    build_after_trace = True
    head_lambda_scale = 4.0
    pruned: type = None

    def build_space(self, model: nn.Module, name: str, space, width_args: Dict) -> None:
        add_traced_attention(model, name, space, width_args, self.head_lambda_scale,
                             self.pruned.per_head_params, per_head_layout=True)

    def static_rule(self, module: nn.Module, name: str, subnet: Dict) -> None:
        if not isinstance(module, self.pruned):
            convert_searched_attention(module, name, subnet, self.pruned)


@ADAPTERS.register_module()
class LeAttentionAdapter(_BiasedAttentionAdapter):
    """TinyViT's window attention."""

    module_type = LeAttention
    pruned = PrunedLeAttention


@ADAPTERS.register_module()
class AttentionWithBiasAdapter(_BiasedAttentionAdapter):
    """EfficientFormer's attention (its last stage's ViT blocks)."""

    module_type = AttentionWithBias
    pruned = PrunedAttentionWithBias
