# Copyright (c) mmdms contributors. All rights reserved.
"""A Llama whose decoder layers have their own widths (a model pruned by mmdms,
Differentiable Model Scaling): ``transformers``' own Llama layers, each built with its widths
from :class:`MMDMSLlamaConfig`.

Each layer is a ``LlamaDecoderLayer`` whose attention has that layer's query and key/value heads
(grouped-query attention, ``head_dim`` unchanged) and whose MLP has that layer's intermediate
width; everything else (embeddings, norms, rotary embedding, the causal LM head, generation
and caching) is ``LlamaForCausalLM``'s. This file imports ``transformers`` and ``torch`` only;
it is saved beside the weights (Hugging Face remote code).
"""
import copy

from torch import nn
from transformers.models.llama.modeling_llama import (LlamaDecoderLayer, LlamaForCausalLM,
                                                      LlamaModel, LlamaPreTrainedModel,
                                                      LlamaRMSNorm, LlamaRotaryEmbedding)

from .configuration_mmdms_llama import MMDMSLlamaConfig


def decoder_layer(config, layer_idx):
    """``LlamaDecoderLayer`` ``layer_idx`` with its own widths.

    It is built from a copy of ``config`` with the layer's widths, then its attention and MLP
    are pointed back at ``config`` itself, so that what is set on the model's config later
    (the attention implementation) reaches every layer.
    """
    layer_config = copy.copy(config)
    for key, value in config.layer_widths(layer_idx).items():
        setattr(layer_config, key, value)
    layer = LlamaDecoderLayer(layer_config, layer_idx)
    layer.self_attn.config = config
    layer.mlp.config = config
    return layer


class MMDMSLlamaPreTrainedModel(LlamaPreTrainedModel):
    config_class = MMDMSLlamaConfig


class MMDMSLlamaModel(MMDMSLlamaPreTrainedModel, LlamaModel):
    """``LlamaModel`` with per-layer widths."""

    def __init__(self, config):
        MMDMSLlamaPreTrainedModel.__init__(self, config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            [decoder_layer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()


class MMDMSLlamaForCausalLM(MMDMSLlamaPreTrainedModel, LlamaForCausalLM):
    """``LlamaForCausalLM`` with per-layer widths."""

    def __init__(self, config):
        MMDMSLlamaPreTrainedModel.__init__(self, config)
        self.model = MMDMSLlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()


MMDMSLlamaModel.register_for_auto_class('AutoModel')
MMDMSLlamaForCausalLM.register_for_auto_class('AutoModelForCausalLM')
