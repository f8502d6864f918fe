# Copyright (c) mmdms contributors. All rights reserved.
"""Language models as mmengine models (Hugging Face ``transformers`` causal LMs)."""
from .hf_causal_lm import HFCausalLM

__all__ = ['HFCausalLM']
