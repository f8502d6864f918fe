# Copyright (c) mmdms contributors. All rights reserved.
"""Hugging Face ``transformers``' Llama decoder (``LlamaModel``): its width space, built from
its layout, and its decoder layers as depth blocks.

Per decoder layer ``layers.i`` the space has (paper Sec. 5.3, the Llama-7B experiment prunes
heads and FFN widths):

* ``layers.i.self_attn.heads``: the attention heads, one element per **key/value group**
  (``num_key_value_heads`` elements). A kept element keeps its key/value head and the
  ``num_attention_heads / num_key_value_heads`` query heads that read it, so the pruned layer is
  grouped-query attention with the same group size and whole heads (RoPE rotates pairs of dims
  inside a head, so no dim inside a head is pruned). With multi-head attention (one query head
  per group) this is plain head pruning. The mask scales the rows of ``v_proj`` (its weight
  and bias, through the DMS linear's ``dms_output_mask``): a head whose values are zero adds
  zero to ``o_proj``'s input, so with hard masks the masked layer computes exactly what the
  layer without those heads does. For counting, ``q_proj`` / ``o_proj`` see the mask expanded
  over the query heads of each group and ``k_proj`` / ``v_proj`` over the key/value head dims;
  the attention's ``q_heads * head_dim * 2 * N^2`` MACs (``q k^T`` and ``attn v``, causal
  attention counted in full) are counted by :class:`LlamaAttentionRule`.
* ``layers.i.mlp.hidden``: the FFN intermediate width: ``down_proj`` reads its input through
  the mask; ``gate_proj`` / ``up_proj`` rows and ``down_proj`` columns are what it prunes.

With ``tie_layer_widths=True`` (``DMSMutator(adapter_args=dict(LlamaForCausalLMAdapter=
dict(tie_layer_widths=True)))``) every layer shares one heads mutable
(``model.layers.self_attn.heads``) and one FFN mutable (``model.layers.mlp.hidden``): the
pruned model keeps the same widths in every layer, so it exports as a plain
``LlamaForCausalLM`` (:func:`mmdms.deploy.hf.save_hf_model` with ``uniform=True``). The shared
mask's gradient and Taylor importance sum over the layers.

The hidden (embedding) width is not searched. Each ``LlamaDecoderLayer`` is an
identity-residual block (two pre-norm residual branches), so DMS searches the depth of
``layers``; its forward returns the hidden states (a tensor since transformers 4.54; earlier
versions return a tuple, which the depth hook cannot mix).

Qwen2 (biases on q/k/v, which the mask scales too) and Mistral share this layout; their
adapters are not registered yet.
"""
from typing import Dict, Optional

import torch
import torch.nn as nn
from transformers.models.llama.modeling_llama import (LlamaAttention, LlamaForCausalLM, LlamaMLP,
                                                      LlamaModel)

from mmdms.models.layer_rules import (LayerCall, LayerRule, MaskReader, mask_input_channels,
                                      register_layer_rule, replace_with_dms_op)
from mmdms.models.mutables import DMSMutableChannel
from mmdms.models.search_space import mutable_mask
from mmdms.registry import ADAPTERS
from .base import FamilyAdapter, ResidualBlockAdapter


class ExpandedMask:
    """The mask of a mutable over ``N`` elements, each repeated ``repeats`` times: a mask over
    ``N * repeats`` channels (key/value groups -> their query or key/value head dims)."""

    def __init__(self, mutable: DMSMutableChannel, repeats: int) -> None:
        self.mutable, self.repeats = mutable, repeats

    def __call__(self, hard: bool = False) -> torch.Tensor:
        mask = self.mutable.hard_mask if hard else self.mutable.soft_mask
        return mask.repeat_interleave(self.repeats)


def attention_heads_key(name: str) -> str:
    """The width key of the heads of the attention named ``name``."""
    return f'{name}.heads'


@register_layer_rule
class LlamaAttentionRule(LayerRule):
    """``LlamaAttention`` whose heads are searched: ``q_heads * head_dim * 2 * N^2`` MACs for
    ``q k^T`` and ``attn v`` (its parameters are its linears')."""

    module_types = (LlamaAttention, )
    kind = 'llama_attention'
    owns_params = False

    def counted(self, name: str, space) -> bool:
        return isinstance(space.layer_masks(f'{name}.o_proj').in_mask, ExpandedMask)

    def record(self, name: str, module: nn.Module, x: torch.Tensor, out) -> LayerCall:
        channels = module.o_proj.in_features
        return LayerCall(name, self.kind, channels, channels, x.shape[1])

    def widths(self, call: LayerCall, reader: MaskReader) -> tuple:
        heads = reader.space.layer_masks(f'{call.name}.o_proj').in_mask.mutable
        kv_heads = reader.mutable_width(heads)
        query_per_kv = call.in_channels // heads.num_channels  # group size * head_dim
        return (kv_heads * query_per_kv, )

    def macs(self, call: LayerCall, widths: tuple):
        query_channels, = widths  # kept query heads * head_dim
        return 2 * query_channels * call.positions**2


@ADAPTERS.register_module()
class LlamaDecoderLayerAdapter(ResidualBlockAdapter):
    """``LlamaDecoderLayer``: ``h + attn(norm(h))``, then ``h + mlp(norm(h))``."""

    module_type = 'transformers.models.llama.modeling_llama.LlamaDecoderLayer'


@ADAPTERS.register_module()
class LlamaForCausalLMAdapter(FamilyAdapter):
    """Builds the width space of a ``transformers`` ``LlamaForCausalLM``'s decoder
    (``model``, a ``LlamaModel``; see the module docstring).

    The adapter is registered for the causal LM rather than its ``LlamaModel`` because the
    module whose space an adapter builds is a leaf for MMRazor's tracer, and the causal LM's own
    forward (cache set-up, keyword plumbing, output classes) cannot be traced either; its
    ``lm_head`` reads the hidden width, which is not searched.

    Attributes:
        head_lambda_scale (float): temperature scale of the head mutables (paper: 4).
    """

    module_type = LlamaForCausalLM
    head_lambda_scale = 4.0

    def build_space(self, model: nn.Module, name: str, space, width_args: Dict,
                    tie_layer_widths: bool = False) -> None:
        """See the class docstring; ``tie_layer_widths``: one heads and one FFN mutable
        shared by every decoder layer (see the module docstring)."""
        decoder_name = f'{name}.model' if name else 'model'
        llama = model.get_submodule(decoder_name)
        if not isinstance(llama, LlamaModel):
            raise TypeError(f"'{decoder_name}' is {type(llama).__name__}, not the LlamaModel "
                            'the Llama search space is built on')
        prefix = f'{decoder_name}.'
        attentions, mlps = [], []
        for i, layer in enumerate(llama.layers):
            base = f'{prefix}layers.{i}'
            attn, mlp = layer.self_attn, layer.mlp
            if type(attn) is not LlamaAttention or type(mlp) is not LlamaMLP:
                raise TypeError(
                    f"'{base}' has {type(attn).__name__} / {type(mlp).__name__}; the Llama "
                    'search space handles LlamaAttention and LlamaMLP (register an adapter '
                    'for other attention or MLP classes)')
            attentions.append((f'{base}.self_attn', attn))
            mlps.append((f'{base}.mlp', mlp))
        groups = [(attentions, mlps)]
        if not tie_layer_widths:
            groups = [([a], [m]) for a, m in zip(attentions, mlps)]
        for group_attentions, group_mlps in groups:
            key = None if not tie_layer_widths else f'{prefix}layers.self_attn'
            self._build_attention(model, group_attentions, space, width_args, key)
            key = None if not tie_layer_widths else f'{prefix}layers.mlp'
            self._build_mlp(model, group_mlps, space, width_args, key)

    def _build_attention(self, model: nn.Module, attentions: list, space, width_args: Dict,
                         key: Optional[str] = None) -> None:
        """One heads mutable for ``attentions`` (``[(name, LlamaAttention)]``, of the same
        shape), under width key ``attention_heads_key(key or the attention's name)``."""
        shapes = set()
        for name, attn in attentions:
            head_dim = attn.head_dim
            kv_heads = attn.k_proj.out_features // head_dim
            query_heads = attn.q_proj.out_features // head_dim
            if kv_heads * head_dim != attn.k_proj.out_features or query_heads % kv_heads:
                raise ValueError(f"'{name}': {query_heads} query heads and "
                                 f'{attn.k_proj.out_features} / {head_dim} key/value heads do '
                                 'not form grouped-query attention')
            shapes.add((query_heads, kv_heads, head_dim))
        if len(shapes) > 1:
            raise ValueError(f'tie_layer_widths needs the same attention shape in every layer '
                             f'(query heads, key/value heads, head dim), got {sorted(shapes)}')
        (query_heads, kv_heads, head_dim), = shapes
        group = query_heads // kv_heads
        args = dict(width_args, step=1, min_width=1, lambda_scale=self.head_lambda_scale)
        heads = DMSMutableChannel(kv_heads, **args)
        v_mask = ExpandedMask(heads, head_dim)
        q_mask = ExpandedMask(heads, group * head_dim)
        projections = []
        for name, _ in attentions:
            v_proj = replace_with_dms_op(model, f'{name}.v_proj')
            v_proj.dms_output_mask = v_mask  # zero values of a pruned head: it adds nothing
            projections += [f'{name}.{p}' for p in ('q_proj', 'k_proj', 'v_proj', 'o_proj')]
            space.set_layer_masks(f'{name}.q_proj', out_mask=q_mask)
            space.set_layer_masks(f'{name}.k_proj', out_mask=v_mask)
            space.set_layer_masks(f'{name}.v_proj', out_mask=v_mask)
            space.set_layer_masks(f'{name}.o_proj', in_mask=q_mask)
        space.add_width(attention_heads_key(key or attentions[0][0]), heads, projections)

    def _build_mlp(self, model: nn.Module, mlps: list, space, width_args: Dict,
                   key: Optional[str] = None) -> None:
        """One FFN width mutable for ``mlps`` (``[(name, LlamaMLP)]``), under width key
        ``f'{key or the MLP's name}.hidden'``."""
        widths = {mlp.down_proj.in_features for _, mlp in mlps}
        if len(widths) > 1:
            raise ValueError(f'tie_layer_widths needs the same FFN width in every layer, got '
                             f'{sorted(widths)}')
        hidden = DMSMutableChannel(widths.pop(), **width_args)
        mask = mutable_mask(hidden)
        layers = []
        for name, _ in mlps:
            mask_input_channels(model, f'{name}.down_proj', hidden)
            layers += [f'{name}.{p}' for p in ('gate_proj', 'up_proj', 'down_proj')]
            space.set_layer_masks(f'{name}.gate_proj', out_mask=mask)
            space.set_layer_masks(f'{name}.up_proj', out_mask=mask)
            space.set_layer_masks(f'{name}.down_proj', in_mask=mask)
        space.add_width(f'{key or mlps[0][0]}.hidden', hidden, layers)
