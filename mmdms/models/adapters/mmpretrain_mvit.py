# Copyright (c) mmdms contributors. All rights reserved.
"""mmpretrain's MViT-V2: the heads of its ``MultiScaleAttention`` are searched, their dims kept.

Each head's q, k and v are pooled by a depthwise conv and normalised by a LayerNorm over the
head dims, both shared by the heads (they run on ``(B * heads, head_dims, H, W)``), and the
residual pooling adds the pooled q to each head's output. A zeroed ``qkv`` row is therefore not
a removed one (the LayerNorm turns a zero head into its bias, and scales any other back), so the
heads' mask acts on ``proj``'s input, ``(heads, head_dims)``, where a head's whole output
arrives: with a hard mask, exactly the attention with the head removed
(:class:`~.searched_attention.FixedDims` keep every dim). The export slices ``qkv``'s rows of the
kept heads and ``proj``'s columns; the pooling convs, norms and relative-position tables are
per head dim and stay.

The estimator scales what runs once per head by the kept fraction of ``proj``'s input: the
pooling convs and norms (:meth:`~mmdms.models.layer_rules.LayerRule.per_channel_sublayers`) and
the attention's own products, ``q k^T``, ``attn v`` and the decomposed relative positions'
``einsum`` (:attr:`~mmdms.models.layer_rules.LayerRule.scales_own_products`).
"""
from typing import Dict, Tuple

import torch.nn as nn
from mmpretrain.models.backbones.mvit import MultiScaleAttention

from mmdms.models.layer_rules import LayerRule, register_layer_rule, replace_with_dms_op
from mmdms.registry import ADAPTERS
from .base import FamilyAdapter
from .searched_attention import HeadsDimsMask, QKVMask, head_mutables

#: temperature scale of the head-count mutables (paper App. A.1.1)
HEAD_LAMBDA_SCALE = 4.0


@register_layer_rule
class MultiScaleAttentionRule(LayerRule):
    """MViT-V2's attention is counted through its layers (the estimator records ``qkv``,
    ``proj``, the pooling convs and norms) and its own products, the per-head ones scaled by
    the heads ``proj`` reads (see the module docstring); the attention itself records no call.
    """

    module_types = (MultiScaleAttention, )
    kind = 'attention'
    owns_params = False
    scales_own_products = True

    def channels(self, module: nn.Module) -> Tuple[int, int]:
        return module.in_dims, module.out_dims

    def counted(self, name: str, space) -> bool:
        return False

    def per_channel_sublayers(self, module: nn.Module) -> Tuple[str, ...]:
        return ('pool_q', 'norm_q', 'pool_k', 'norm_k', 'pool_v', 'norm_v')

    def per_channel_source(self, module: nn.Module, name: str) -> Tuple[str, int]:
        return f'{name}.proj', module.proj.in_features


@ADAPTERS.register_module()
class MultiScaleAttentionAdapter(FamilyAdapter):
    """MViT-V2's attention: its heads (see the module docstring)."""

    module_type = MultiScaleAttention
    match_subclasses = False
    build_after_trace = True

    def build_space(self, model: nn.Module, name: str, space, width_args: Dict) -> None:
        attn = model.get_submodule(name)
        qkv, proj = f'{name}.qkv', f'{name}.proj'
        if space.layer_masks(qkv).out_mask(True) is not None or \
                space.layer_masks(proj).in_mask(True) is not None:
            return  # the tracer searched them already: a mask would apply twice
        head_dims = attn.out_dims // attn.num_heads
        heads, qk, v = head_mutables(width_args, attn.num_heads, head_dims, HEAD_LAMBDA_SCALE,
                                     search_dims=False)
        heads_mask = HeadsDimsMask(heads, v)
        replace_with_dms_op(model, proj).dms_input_mask = heads_mask
        space.set_layer_masks(qkv, out_mask=QKVMask(heads, qk, v))  # sliced by the export
        space.set_layer_masks(proj, in_mask=heads_mask)
        space.add_width(f'{name}.heads', heads, [qkv, proj])
        space.add_attention(name, heads, qk, v)

    def static_rule(self, module: nn.Module, name: str, subnet: Dict) -> None:
        spec = subnet.get('attentions', {}).get(name)
        if spec is None:
            return
        heads, head_dims = spec['heads']['kept'], spec['v_dims']['kept']
        if module.qkv.out_features != 3 * heads * head_dims or \
                module.proj.in_features != heads * head_dims:
            raise ValueError(f"'{name}': qkv writes {module.qkv.out_features} and proj reads "
                             f'{module.proj.in_features} features, not {heads} heads of '
                             f'{head_dims} dims')
        module.num_heads, module.out_dims = heads, heads * head_dims
