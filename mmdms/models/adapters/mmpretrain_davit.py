# Copyright (c) mmdms contributors. All rights reserved.
"""mmpretrain's DaViT: its two attentions and its backbone read widths that pruning changes.

* ``DaViTWindowMSA.forward`` splits ``qkv``'s output into heads of ``C // num_heads`` features,
  ``C`` being its *input's* width, and merges them back to ``C``: a pruned stream broke it, so
  MMRazor's pruning check kept every DaViT stream fixed (61% of the weights searched). The
  head width is read from ``qkv``'s declared width instead (as Swin's ``WindowMSA``, see
  :mod:`.mmpretrain_stream_attention`), and its heads and qk / v head dims are searched as
  Swin's are (:mod:`.searched_attention`; it has no per-head parameters).
* ``ChannelAttention.forward`` reshapes with ``B, N`` read from its input, which MMRazor's
  channel graph takes for a join of the stream with ``qkv``'s output (EdgeNeXt's channel
  attention alike): its heads are split off and merged on their own axis. Its heads stay
  fixed: its softmax runs over the head dims, where a zeroed dim is not a removed one.
* ``DaViT.forward`` turns each output stage into a feature map of the width it was built with
  (``num_features``), as Swin does: the copy's forward reads it from the tokens and the static
  model's ``num_features`` become its sliced output norms' widths.
* ``DaViTDownSample.forward`` applies its ``AdaptivePadding`` to the *tokens* ``(B, L, C)``,
  which pads their last two axes to multiples of its stride: ``C`` as if it were a width of
  the image. In any model that runs it pads nothing (a padded ``L`` fails its assert, a padded
  ``C`` its norm), so the search model never pads; a static model with an odd kept width would
  (47 channels padded to 48 at stride 2), and so did MMRazor's pruning check, which keeps 90%
  of a width (384 -> 345): the copy's forward and the static model go without that padding.

Each attention's static class has the same state and the forward above, so a static DaViT with
pruned streams runs.
"""
from typing import Dict, Optional

import torch
import torch.nn as nn
from mmpretrain.models.backbones.davit import (ChannelAttention, DaViT, DaViTDownSample,
                                               DaViTWindowMSA)

from mmdms.registry import ADAPTERS
from .base import FamilyAdapter
from mmdms.models.layer_rules import register_layer_rule
from .mmpretrain_stream_attention import (PrunedHeadsMixin, _head_dims, _SearchedHeadsAdapter,
                                          _StreamFreeAdapter, split_heads)
from .searched_attention import AttentionRule
from .mmpretrain_swin import SwinTransformerAdapter


def davit_window_msa_forward(self, x: torch.Tensor,
                             mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``DaViTWindowMSA.forward`` with the heads' width read from ``qkv``, not ``x`` (or,
    exported with searched heads, from its ``qk_dims`` / ``v_dims``)."""
    q, k, v = split_heads(self, self.qkv(x))
    attn = (q * self.scale) @ k.transpose(-2, -1)
    if mask is not None:
        windows, heads, n = attn.shape[0], attn.shape[1], attn.shape[2]
        attn = attn.view(windows // mask.shape[0], mask.shape[0], heads, n, n) + \
            mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, n, n)
    attn = self.attn_drop(self.softmax(attn))
    x = (attn @ v).transpose(1, 2).flatten(2)
    return self.proj_drop(self.proj(x))


def davit_channel_attention_forward(self, x: torch.Tensor) -> torch.Tensor:
    """``ChannelAttention.forward`` (DaViT) with the heads split and merged on their axis."""
    head_dims = _head_dims(self.qkv, 3 * self.num_heads)
    qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, head_dims)).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attention = ((k * self.scale).transpose(-1, -2) @ v).softmax(dim=-1)
    x = (attention @ q.transpose(-1, -2)).transpose(-1, -2)
    return self.proj(x.transpose(1, 2).flatten(2))


class PrunedDaViTWindowMSA(PrunedHeadsMixin, DaViTWindowMSA):
    """A static ``DaViTWindowMSA`` whose stream may be narrower than its heads (same state)
    and, converted by :meth:`convert_from`, with the heads and qk / v head dims DMS kept (it
    has no per-head parameters: DaViT's positions are convolutional)."""

    forward = davit_window_msa_forward


class PrunedChannelAttention(ChannelAttention):
    """A static DaViT ``ChannelAttention`` whose stream may be narrower than its heads."""

    forward = davit_channel_attention_forward


@register_layer_rule
class DaViTWindowAttentionRule(AttentionRule):
    """DaViT's window attention: ``heads * (qk + v) * N^2`` MACs per window, as Swin's."""

    module_types = (DaViTWindowMSA, )


@ADAPTERS.register_module()
class DaViTWindowMSAAdapter(_SearchedHeadsAdapter):
    """DaViT's window attention: its stream, heads and qk / v head dims."""

    module_type = DaViTWindowMSA
    forward = staticmethod(davit_window_msa_forward)
    pruned = PrunedDaViTWindowMSA


@ADAPTERS.register_module()
class DaViTChannelAttentionAdapter(_StreamFreeAdapter):
    """DaViT's channel attention."""

    module_type = ChannelAttention
    forward = staticmethod(davit_channel_attention_forward)
    pruned = PrunedChannelAttention


@ADAPTERS.register_module()
class DaViTAdapter(SwinTransformerAdapter):
    """The stream of DaViT's output stages: Swin's forward and static rule (see the module
    docstring)."""

    module_type = DaViT


@ADAPTERS.register_module()
class DaViTDownSampleAdapter(FamilyAdapter):
    """DaViT's down-sampling: no padding of the tokens' width (see the module docstring)."""

    module_type = DaViTDownSample

    def trace_forward(self, module: nn.Module, x: torch.Tensor, input_size) -> tuple:
        H, W = input_size
        B, _, C = x.shape
        x = module.norm(x).reshape(B, H, W, C).permute(0, 3, 1, 2).contiguous()
        x = module.projection(x)
        return x.flatten(2).transpose(1, 2), (x.size(2), x.size(3))

    def static_rule(self, module: nn.Module, name: str, subnet: Dict) -> None:
        module.adaptive_padding = None
