# Copyright (c) mmdms contributors. All rights reserved.
"""Export a pruned Hugging Face Llama (an exported DMS subnet of
:class:`~mmdms.models.language_models.HFCausalLM`) as a Hugging Face model directory.

Two forms:

* **per-layer widths** (default): ``config.json`` of model type ``mmdms_llama`` with the widths
  of every decoder layer (``MMDMSLlamaConfig`` of
  :mod:`mmdms.deploy.hf_llama.configuration_mmdms_llama`), the weights, and the configuration
  and modeling files beside them with ``auto_map`` in ``config.json`` (the Hugging Face
  convention for custom architectures). It loads with
  ``AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)``.
* **uniform** (``uniform=True``): a plain ``LlamaForCausalLM`` directory (``model_type``
  ``llama``, explicit ``head_dim``) that loads with no remote code. Every kept decoder layer
  must have the same attention heads, key/value heads and FFN width; the export refuses
  otherwise.

In both, the decoder layers DMS removed are left out (the kept ones are renumbered; the
per-layer form records the removed indices in ``removed_layers``), input and output embeddings
stay tied when they were, and the saved directory is loaded back and checked before it
appears: its logits equal the pruned model's (relative difference at most
:data:`HF_TOLERANCE`) and its parameter count equals ``subnet.json``'s.
"""
import os.path as osp
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from mmdms.utils import atomic_directory, check_new_directory
from .onnx import DeployError, check_subnet_dir, load_subnet_model

#: Largest relative difference (to the largest logit magnitude) between the reloaded Hugging
#: Face model's logits and the pruned model's that the export accepts.
HF_TOLERANCE = 1e-4
#: Keys of the source config that the exported config sets itself.
_DERIVED_KEYS = ('model_type', 'architectures', 'auto_map', 'transformers_version',
                 '_name_or_path', 'num_hidden_layers', 'num_attention_heads',
                 'num_key_value_heads', 'intermediate_size', 'head_dim')


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise DeployError('The Hugging Face export needs transformers: pip install -e .[llm] '
                          '(the # llm section of requirements/optional.txt)') from e
    return transformers


def _causal_lm(model: nn.Module) -> nn.Module:
    """The ``transformers`` Llama causal LM inside ``model`` (a DMSSubnet, an HFCausalLM or
    the causal LM itself)."""
    from transformers import LlamaForCausalLM
    seen = model
    for _ in range(3):
        if isinstance(seen, LlamaForCausalLM):
            return seen
        seen = getattr(seen, 'architecture', None) or getattr(seen, 'model', None)
        if seen is None:
            break
    raise DeployError(f'The Hugging Face export handles a pruned transformers '
                      f'LlamaForCausalLM (an HFCausalLM subnet); {type(model).__name__} holds '
                      'none')


def llama_layer_widths(causal_lm: nn.Module) -> List[Optional[Dict[str, int]]]:
    """The widths of each decoder layer of a pruned ``LlamaForCausalLM``, read from its
    linears: ``num_attention_heads``, ``num_key_value_heads``, ``intermediate_size``; ``None``
    for a removed layer (an identity)."""
    head_dim = _head_dim(causal_lm.config)
    widths = []
    for layer in causal_lm.model.layers:
        attn = getattr(layer, 'self_attn', None)
        if attn is None:  # a RemovedBlock
            widths.append(None)
            continue
        widths.append(dict(num_attention_heads=attn.q_proj.out_features // head_dim,
                           num_key_value_heads=attn.k_proj.out_features // head_dim,
                           intermediate_size=layer.mlp.gate_proj.out_features))
    return widths


def _head_dim(config) -> int:
    return getattr(config, 'head_dim', None) or config.hidden_size // config.num_attention_heads


def hf_config(causal_lm: nn.Module, uniform: bool = False):
    """The Hugging Face config of a pruned ``LlamaForCausalLM`` (see the module docstring).

    Raises:
        DeployError: ``uniform`` and the kept layers' widths differ, or every layer was
            removed.
    """
    transformers = _transformers()
    source = causal_lm.config
    widths = llama_layer_widths(causal_lm)
    kept = [w for w in widths if w is not None]
    if not kept:
        raise DeployError('Every decoder layer was removed: there is no Llama to export')
    base = {k: v for k, v in source.to_dict().items() if k not in _DERIVED_KEYS}
    base.update(num_hidden_layers=len(kept), head_dim=_head_dim(source))
    if uniform:
        distinct = sorted({tuple(w.values()) for w in kept})
        if len(distinct) > 1:
            raise DeployError(
                'A plain LlamaForCausalLM needs the same widths in every decoder layer; the '
                'kept layers have (attention heads, key/value heads, FFN width) '
                f'{distinct}. Export with per-layer widths (no --uniform: the directory loads '
                'with trust_remote_code=True), or search with the widths tied across layers: '
                'DMSMutator(adapter_args=dict(LlamaForCausalLMAdapter=dict('
                'tie_layer_widths=True)))')
        return transformers.LlamaConfig(**base, **kept[0],
                                        architectures=['LlamaForCausalLM'])
    from .hf_llama.configuration_mmdms_llama import MMDMSLlamaConfig
    return MMDMSLlamaConfig(
        **base,
        num_attention_heads=source.num_attention_heads,
        num_key_value_heads=source.num_key_value_heads,
        intermediate_size=source.intermediate_size,
        num_attention_heads_per_layer=[w['num_attention_heads'] for w in kept],
        num_key_value_heads_per_layer=[w['num_key_value_heads'] for w in kept],
        intermediate_size_per_layer=[w['intermediate_size'] for w in kept],
        removed_layers=[i for i, w in enumerate(widths) if w is None],
        architectures=['MMDMSLlamaForCausalLM'])


def to_hf_model(model: nn.Module, uniform: bool = False) -> nn.Module:
    """A Hugging Face model with the weights of a pruned Llama (a DMSSubnet or HFCausalLM of
    one, or the ``LlamaForCausalLM``): ``MMDMSLlamaForCausalLM`` with per-layer widths, or
    with ``uniform`` a plain ``LlamaForCausalLM``. Removed layers are left out; the weights are
    shared with ``model``, not copied."""
    causal_lm = _causal_lm(model)
    config = hf_config(causal_lm, uniform)
    if uniform:
        from transformers import LlamaForCausalLM as model_class
    else:
        from .hf_llama.modeling_mmdms_llama import MMDMSLlamaForCausalLM as model_class
    kept = [i for i, w in enumerate(llama_layer_widths(causal_lm)) if w is not None]
    renumber = {f'model.layers.{old}.': f'model.layers.{new}.' for new, old in enumerate(kept)}
    state = {}
    for key, value in causal_lm.state_dict().items():
        if key.startswith('model.layers.'):
            prefix = '.'.join(key.split('.')[:3]) + '.'
            key = renumber[prefix] + key[len(prefix):]
        state[key] = value
    with torch.device('meta'):  # no second copy of the weights
        hf = model_class(config)
    missing, unexpected = hf.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        hf.tie_weights()
        missing = [k for k in missing if k != 'lm_head.weight']
    if missing or unexpected:
        raise DeployError(f'The pruned Llama and the {type(hf).__name__} built from its widths '
                          f'disagree: missing {missing}, unexpected {unexpected}')
    # non-persistent buffers (the rotary inverse frequencies) are not in the state dict
    param = next(causal_lm.parameters())
    rotary = type(hf.model.rotary_emb)(config=config, device=param.device)
    hf.model.rotary_emb = rotary
    meta = [n for n, t in list(hf.named_parameters()) + list(hf.named_buffers()) if t.is_meta]
    if meta:
        raise DeployError(f'{meta} were not set from the pruned Llama')
    return hf.eval()


def random_token_ids(vocab_size: int, shape, seed: int = 0) -> torch.Tensor:
    """Token ids uniform over the vocabulary, reproducible by ``seed``."""
    return torch.randint(0, vocab_size, tuple(shape),
                         generator=torch.Generator().manual_seed(seed))


def logits_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest absolute difference relative to the largest magnitude of ``expected``."""
    if actual.shape != expected.shape:
        return float('inf')
    return ((actual.float() - expected.float()).abs().max() /
            expected.float().abs().max().clamp_min(1e-12)).item()


def save_hf_model(model: nn.Module,
                  output_dir: str,
                  uniform: bool = False,
                  params: Optional[int] = None,
                  check_shape=(2, 16),
                  force: bool = False) -> Dict:
    """Save a pruned Llama as a Hugging Face directory, after loading it back and checking it.

    Args:
        model (nn.Module): the pruned Llama (a DMSSubnet, its HFCausalLM or the
            ``LlamaForCausalLM``), in eval mode.
        output_dir (str): the directory to create; it appears complete or not at all.
        uniform (bool): a plain ``LlamaForCausalLM`` directory (same widths in every layer)
            instead of per-layer widths with remote code.
        params (int, optional): the parameter count the reloaded model must have
            (``subnet.json``'s ``params``).
        check_shape (tuple): ``(batch, tokens)`` of the random token ids of the logits check.
        force (bool): replace an existing ``output_dir``.

    Returns:
        dict: ``path``, ``params`` (of the reloaded model), ``max_rel_diff``,
        ``trust_remote_code`` (whether loading needs it) and ``config`` (the model type).

    Raises:
        DeployError: the widths do not fit a plain Llama (``uniform``), or the reloaded model
            computes other logits or has another parameter count.
        FileExistsError: ``output_dir`` exists and ``force`` is not set.
    """
    transformers = _transformers()
    output_dir = osp.abspath(output_dir)
    check_new_directory(output_dir, force)
    causal_lm = _causal_lm(model)
    hf = to_hf_model(causal_lm, uniform)
    ids = random_token_ids(causal_lm.config.vocab_size, check_shape)
    with torch.no_grad():
        expected = causal_lm(input_ids=ids, use_cache=False).logits
    with atomic_directory(output_dir, force) as tmp:
        hf.save_pretrained(tmp)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(
            tmp, trust_remote_code=not uniform).eval()
        with torch.no_grad():
            actual = loaded(input_ids=ids, use_cache=False).logits
        diff = logits_difference(actual, expected)
        count = loaded.num_parameters()
        if not diff <= HF_TOLERANCE:
            raise DeployError(f'The saved Hugging Face model computes other logits than the '
                              f'pruned model (max relative difference {diff:.3g})')
        if params is not None and count != params:
            raise DeployError(f'The saved Hugging Face model has {count} parameters, '
                              f'subnet.json says {params}')
    return dict(path=output_dir, params=count, max_rel_diff=diff,
                trust_remote_code=not uniform, config=loaded.config.model_type)


def export_hf(subnet_dir: str,
              output_dir: Optional[str] = None,
              checkpoint: Optional[str] = None,
              uniform: bool = False,
              force: bool = False) -> Dict:
    """Export the Llama subnet of a directory ``tools/export_subnet.py`` wrote as a Hugging
    Face directory (:func:`save_hf_model`), checked against that subnet's ``pruned.pth``
    model (or ``checkpoint``, e.g. after a recovery fine-tune) and ``subnet.json``'s
    parameter count.

    Args:
        subnet_dir (str): the exported subnet directory.
        output_dir (str, optional): default ``SUBNET_DIR/hf`` (``SUBNET_DIR/hf_uniform`` with
            ``uniform``).
        checkpoint (str, optional): weights of the subnet; default its ``pruned.pth``.
        uniform (bool): a plain ``LlamaForCausalLM`` (see :func:`hf_config`).
        force (bool): replace an existing ``output_dir``.
    """
    subnet = check_subnet_dir(subnet_dir)
    output_dir = output_dir or osp.join(subnet_dir, 'hf_uniform' if uniform else 'hf')
    check_new_directory(osp.abspath(output_dir), force)  # before the slow part
    model, _ = load_subnet_model(subnet_dir, checkpoint)
    tokens = subnet['input_shape'][-1]
    return save_hf_model(model, output_dir, uniform=uniform, params=subnet['params'],
                         check_shape=(2, tokens), force=force)
