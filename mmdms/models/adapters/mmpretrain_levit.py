# Copyright (c) mmdms contributors. All rights reserved.
"""mmpretrain's LeViT attentions: their heads are split with the token count read from the input.

``Attention.forward`` and ``AttentionSubsample.forward`` start with ``B, N, C = x.shape`` and split
the heads with ``qkv.view(B, N, num_heads, -1)``. MMRazor's channel graph follows channels on
axis 1, so it takes ``N`` (axis 1 of the ``(B, N, C)`` tokens) for the stream's channel count
and ties the stream to the heads' widths; those are in turn tied to the model's input through
the attention biases (``self.ab``, read as a constant), so that every stream width stayed fixed
(55% of the zoo's LeViT-128S searched). The traceable forwards below compute the same function
with the token count left to ``view`` (``-1``), so the stream is searched.

The heads are searched too, their dims kept (:class:`~.searched_attention.FixedDims`). LeViT's
``qkv`` (and ``q`` / ``kv``) is a linear followed by a BatchNorm1d, laid out per head
(``(heads, [q | k | v])``): a zeroed linear row is not zero after the norm, so the heads' mask
scales the norm's ``gamma`` and ``beta`` (its ``dms_output_mask``); a pruned head's q, k and v
are then zero, so its output is (``HSwish(0) = 0`` before ``proj``). The export slices the
linears, the norms and the per-head ``attention_biases``; the static attention keeps
mmpretrain's forward with its head counts set (:meth:`LeViTAttentionAdapter.static_rule`).
"""
from typing import Dict

import torch
import torch.nn as nn
from mmpretrain.models.backbones.levit import Attention, AttentionSubsample

from mmdms.models.layer_rules import LayerCall, register_layer_rule, replace_with_dms_op
from mmdms.models.search_space import mutable_mask
from mmdms.registry import ADAPTERS
from .base import FamilyAdapter
from .searched_attention import AttentionRule, head_mutables

#: temperature scale of the head-count mutables (paper App. A.1.1)
HEAD_LAMBDA_SCALE = 4.0


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


class RepeatedHeadsMask:
    """The mask of a ``(heads, features)`` axis whose features are all kept: each head's mask
    repeated ``per_head`` times."""

    def __init__(self, heads: nn.Module, per_head: int) -> None:
        self.heads, self.per_head = heads, per_head

    def __call__(self, hard: bool = False) -> torch.Tensor:
        mask = self.heads.hard_mask if hard else self.heads.soft_mask
        return mask.repeat_interleave(self.per_head)


@register_layer_rule
class LeViTAttentionRule(AttentionRule):
    """LeViT's attentions: ``heads * (qk + v) * N_q * N_k`` MACs (the down-sampling one's
    queries are a sub-grid of its keys)."""

    module_types = (Attention, AttentionSubsample)

    def record(self, name: str, module: nn.Module, x: torch.Tensor,
               out: torch.Tensor) -> LayerCall:
        return LayerCall(name, self.kind, x.shape[-1], out.shape[-1], out.shape[1],
                         in_shape=tuple(x.shape[1:]))


class _LeViTHeadsAdapter(FamilyAdapter):
    """A LeViT attention: traced with the token count left to ``view``, then its heads searched
    (see the module docstring).

    Attributes:
        outputs (dict): its linear + BatchNorm1d layers that compute q, k and v -> the features
            each writes per head, as functions of the attention.
    """

    match_subclasses = False
    build_after_trace = True
    outputs: Dict[str, callable] = {}

    def build_space(self, model: nn.Module, name: str, space, width_args: Dict) -> None:
        attn = model.get_submodule(name)
        outputs = {path: per_head(attn) for path, per_head in self.outputs.items()}
        if any(space.layer_masks(f'{name}.{path}.linear').out_mask(True) is not None
               for path in outputs):
            return  # the tracer searched them already: a mask would apply twice
        heads, qk, v = head_mutables(width_args, attn.num_heads, attn.key_dim,
                                     HEAD_LAMBDA_SCALE, attn.d, search_dims=False)
        layers = []
        for path, per_head in outputs.items():
            linear, norm = f'{name}.{path}.linear', f'{name}.{path}.bn'
            mask = RepeatedHeadsMask(heads, per_head)
            replace_with_dms_op(model, norm).dms_output_mask = mask
            space.set_layer_masks(linear, out_mask=mask)
            space.set_layer_masks(norm, in_mask=mask, out_mask=mask)
            layers += [linear, norm]
        proj = f'{name}.proj.1.linear'
        space.set_layer_masks(proj, in_mask=RepeatedHeadsMask(heads, attn.d))
        space.add_width(f'{name}.heads', heads, layers + [proj])
        space.add_attention(name, heads, qk, v)
        space.add_param(f'{name}.attention_biases', mutable_mask(heads), 0)

    def static_rule(self, module: nn.Module, name: str, subnet: Dict) -> None:
        spec = subnet.get('attentions', {}).get(name)
        if spec is None:
            return
        heads = spec['heads']['kept']
        if module.attention_biases.shape[0] != heads:
            raise ValueError(f"'{name}': attention_biases has {module.attention_biases.shape[0]} "
                             f'heads, the subnet {heads}')
        module.num_heads, module.nh_kd, module.dh = heads, module.key_dim * heads, module.d * heads
        if hasattr(module, 'ab'):  # the eval-mode cache of the biases, from before the slicing
            module.ab = module.attention_biases[:, module.attention_bias_idxs]


@ADAPTERS.register_module()
class LeViTAttentionAdapter(_LeViTHeadsAdapter):
    """LeViT's attention (see the module docstring)."""

    module_type = Attention
    outputs = {'qkv': lambda attn: 2 * attn.key_dim + attn.d}

    def trace_forward(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return levit_attention_forward(module, x)


@ADAPTERS.register_module()
class LeViTAttentionSubsampleAdapter(_LeViTHeadsAdapter):
    """LeViT's down-sampling attention (see the module docstring)."""

    module_type = AttentionSubsample
    outputs = {'q.1': lambda attn: attn.key_dim, 'kv': lambda attn: attn.key_dim + attn.d}

    def trace_forward(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return levit_attention_subsample_forward(module, x)
