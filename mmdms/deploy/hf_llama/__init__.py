# Copyright (c) mmdms contributors. All rights reserved.
"""The Hugging Face remote code of a Llama with per-layer widths: ``configuration_mmdms_llama``
and ``modeling_mmdms_llama`` are copied beside the weights of an export
(:func:`mmdms.deploy.hf.export_hf`), so ``AutoModelForCausalLM.from_pretrained(dir,
trust_remote_code=True)`` loads it. They import ``transformers`` and ``torch`` only, never
mmdms."""
