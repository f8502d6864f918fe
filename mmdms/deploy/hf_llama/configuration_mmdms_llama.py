# Copyright (c) mmdms contributors. All rights reserved.
"""Configuration of a Llama whose decoder layers have their own widths (a model pruned by
mmdms, Differentiable Model Scaling).

The per-layer widths are lists of ``num_hidden_layers`` entries: ``num_attention_heads_per_layer``,
``num_key_value_heads_per_layer`` and ``intermediate_size_per_layer``. The scalar
``num_attention_heads``, ``num_key_value_heads`` and ``intermediate_size`` keep the widths of
the model before pruning, and ``head_dim`` is explicit (pruning removes whole heads).
``removed_layers`` lists the indices, in the model before pruning, of the decoder layers that
were removed (informative: the kept layers are numbered ``0 .. num_hidden_layers - 1``).

This file imports ``transformers`` only; it is saved beside the weights (Hugging Face remote
code).
"""
from transformers import LlamaConfig


class MMDMSLlamaConfig(LlamaConfig):
    """``LlamaConfig`` with per-layer attention heads, key/value heads and FFN widths."""

    model_type = 'mmdms_llama'

    def __init__(self,
                 num_attention_heads_per_layer=None,
                 num_key_value_heads_per_layer=None,
                 intermediate_size_per_layer=None,
                 removed_layers=None,
                 **kwargs):
        super().__init__(**kwargs)
        layers = self.num_hidden_layers
        self.num_attention_heads_per_layer = list(
            num_attention_heads_per_layer or [self.num_attention_heads] * layers)
        self.num_key_value_heads_per_layer = list(
            num_key_value_heads_per_layer or [self.num_key_value_heads] * layers)
        self.intermediate_size_per_layer = list(
            intermediate_size_per_layer or [self.intermediate_size] * layers)
        self.removed_layers = list(removed_layers or [])
        for key in ('num_attention_heads_per_layer', 'num_key_value_heads_per_layer',
                    'intermediate_size_per_layer'):
            values = getattr(self, key)
            if len(values) != layers or any(int(v) < 1 for v in values):
                raise ValueError(f'{key} must list a positive width for each of the '
                                 f'{layers} decoder layers (num_hidden_layers), got {values}')
        for i, (heads, kv_heads) in enumerate(zip(self.num_attention_heads_per_layer,
                                                  self.num_key_value_heads_per_layer)):
            if heads % kv_heads:
                raise ValueError(f'decoder layer {i}: {heads} attention heads cannot be shared '
                                 f'by {kv_heads} key/value heads (grouped-query attention '
                                 'needs a multiple)')

    def layer_widths(self, layer_idx):
        """The widths of decoder layer ``layer_idx``, as ``LlamaConfig`` attributes."""
        return dict(num_attention_heads=self.num_attention_heads_per_layer[layer_idx],
                    num_key_value_heads=self.num_key_value_heads_per_layer[layer_idx],
                    intermediate_size=self.intermediate_size_per_layer[layer_idx])


MMDMSLlamaConfig.register_for_auto_class()
