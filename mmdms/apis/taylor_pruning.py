# Copyright (c) mmdms contributors. All rights reserved.
"""One-shot first-order Taylor pruning of a Llama as LLM-Pruner does (Ma et al., 2023): the
baseline DMS_p is compared with on language models.

LLM-Pruner scores each weight by ``|w * dL/dw|`` (its ``taylor=param_first`` criterion; the
gradient summed over calibration batches), sums the scores over every weight of a coupled group
(an attention head with its q/k/v rows and o columns; an FFN channel with its gate/up rows and
down column) and, by default (``--block_wise``), removes the same fraction of heads and of FFN
channels in every decoder layer, the lowest-scored ones. Here a group is a key/value group of
heads (the element of the Llama search space, so the pruned model stays grouped-query
attention), and the fraction is bisected so that the pruned model's parameter count meets a
target, exactly as :func:`~mmdms.apis.uniform_structure` does for uniform width scaling; the
two baselines keep the same widths and differ only in which heads and channels they keep.
"""
from typing import Dict, Iterable

import torch
import torch.nn as nn

from .uniform_scaling import uniform_structure


def _causal_lm(model: nn.Module) -> nn.Module:
    """The transformers Llama causal LM inside an HFCausalLM (or the causal LM itself)."""
    inner = getattr(model, 'model', None)
    if inner is not None and hasattr(inner, 'model') and hasattr(inner.model, 'layers'):
        return inner  # an HFCausalLM
    if inner is not None and hasattr(inner, 'layers'):
        return model  # a LlamaForCausalLM
    raise TypeError(f'Expected an HFCausalLM or a transformers LlamaForCausalLM, got '
                    f'{type(model).__name__}')


def llama_taylor_importance(model: nn.Module, batches: Iterable[torch.Tensor]) -> Dict:
    """LLM-Pruner's first-order Taylor score of every key/value group of heads and every FFN
    channel of every decoder layer.

    Args:
        model: an :class:`~mmdms.models.HFCausalLM` (or a transformers ``LlamaForCausalLM``)
            with the weights to prune; its gradients are overwritten and cleared.
        batches: calibration token ids ``(B, N)``; the next-token loss of each is
            back-propagated and the gradients summed.

    Returns:
        dict: ``'model.model.layers.{i}.self_attn.heads'`` -> a score per key/value group and
        ``'model.model.layers.{i}.mlp.hidden'`` -> a score per FFN channel (the width keys of
        the Llama search space of an HFCausalLM), each ``sum |w * g|`` over the group's weights.
    """
    causal_lm = _causal_lm(model)
    was_training = causal_lm.training
    causal_lm.eval()  # no dropout; gradients still flow
    causal_lm.zero_grad(set_to_none=True)
    seen = 0
    for ids in batches:
        ids = ids.long()
        loss = causal_lm(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        seen += 1
    if not seen:
        raise ValueError('llama_taylor_importance needs at least one calibration batch')
    config = causal_lm.config
    head_dim = getattr(config, 'head_dim', None) or \
        config.hidden_size // config.num_attention_heads
    scores = {}
    with torch.no_grad():
        for i, layer in enumerate(causal_lm.model.layers):
            attn, mlp = layer.self_attn, layer.mlp

            def salience(linear: nn.Linear, dim: int) -> torch.Tensor:
                """``|w * g|`` summed to one value per output row (dim 0) or input column."""
                value = (linear.weight * linear.weight.grad).abs().sum(dim=1 - dim)
                if dim == 0 and linear.bias is not None:
                    value = value + (linear.bias * linear.bias.grad).abs()
                return value

            kv_heads = attn.k_proj.out_features // head_dim
            q_heads = attn.q_proj.out_features // head_dim
            group = q_heads // kv_heads
            per_q = (salience(attn.q_proj, 0) + salience(attn.o_proj, 1)).view(
                kv_heads, group * head_dim).sum(dim=1)
            per_kv = (salience(attn.k_proj, 0) + salience(attn.v_proj, 0)).view(
                kv_heads, head_dim).sum(dim=1)
            scores[f'model.model.layers.{i}.self_attn.heads'] = per_q + per_kv
            scores[f'model.model.layers.{i}.mlp.hidden'] = (
                salience(mlp.gate_proj, 0) + salience(mlp.up_proj, 0) +
                salience(mlp.down_proj, 1))
    causal_lm.zero_grad(set_to_none=True)
    causal_lm.train(was_training)
    return scores


@torch.no_grad()
def taylor_structure(algorithm: nn.Module, scores: Dict[str, torch.Tensor], target: float,
                     resource: str = 'params', tolerance: float = 0.02) -> float:
    """Set a Llama DMS search model to LLM-Pruner's block-wise structure: the same fraction of
    key/value groups and of FFN channels in every layer (bisected to ``target`` as
    :func:`~mmdms.apis.uniform_structure`), the highest-scored ones kept.

    Args:
        algorithm: the DMS search model of the Llama (its ``space``).
        scores: :func:`llama_taylor_importance` of the same weights.
        target: the cost to meet (within ``tolerance``).

    Returns:
        float: the exact cost of the structure set.

    Raises:
        KeyError: a searched width has no score (the message names it).
    """
    widths = algorithm.space.widths
    missing = sorted(set(widths) - set(scores))
    if missing:
        raise KeyError(f'taylor_structure: no Taylor score for the width(s) {missing}; '
                       'llama_taylor_importance scores the heads and FFN widths of every '
                       'layer of an untied Llama search space')
    for key, group in widths.items():
        mutable = group.mutable
        score = scores[key].float()
        if mutable.step > 1:  # a coarse-grained group: the sum over its channels
            score = torch.stack([score[mutable.group_channels(g)].sum()
                                 for g in range(mutable.num_elements)])
        if score.shape != mutable.importance.shape:
            raise ValueError(f"taylor_structure: the score of '{key}' has "
                             f'{tuple(score.shape)} elements, its mutable '
                             f'{tuple(mutable.importance.shape)}')
        mutable.importance.copy_(score)  # the hard mask keeps the top-k by importance
    return uniform_structure(algorithm, target, resource=resource, tolerance=tolerance)
