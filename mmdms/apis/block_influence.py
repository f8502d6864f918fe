# Copyright (c) mmdms contributors. All rights reserved.
"""Layer dropping by Block Influence as ShortGPT does (Men et al., 2024): the depth-pruning
baseline DMS_p is compared with on language models.

ShortGPT scores each decoder layer by its Block Influence, ``BI_i = 1 - E[cos(x_i, x_{i+1})]``
(the cosine similarity of the hidden state of every token before and after the layer, averaged
over calibration tokens), and removes the layers of lowest BI. Here they are removed, in
increasing BI; the number removed is the one whose parameter count is closest to the target
(layers are coarse: the count can miss the target by up to half a layer's parameters).
"""
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .taylor_pruning import _causal_lm


@torch.no_grad()
def block_influence(model: nn.Module, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """The Block Influence of every decoder layer of a Llama.

    Args:
        model: an :class:`~mmdms.models.HFCausalLM` (or a transformers ``LlamaForCausalLM``).
        batches: calibration token ids ``(B, N)``.

    Returns:
        Tensor: ``BI_i = 1 - mean cos(input_i, output_i)`` over all calibration tokens, one per
        layer, in layer order.
    """
    causal_lm = _causal_lm(model)
    layers = causal_lm.model.layers
    sums = torch.zeros(len(layers), dtype=torch.float64)
    count = 0

    def record(index):
        def hook(module, args, kwargs, output):
            hidden = args[0] if args else kwargs['hidden_states']
            out = output[0] if isinstance(output, (tuple, list)) else output
            cos = F.cosine_similarity(hidden.double(), out.double(), dim=-1)
            sums[index] += cos.sum()
        return hook

    handles = [layer.register_forward_hook(record(i), with_kwargs=True)
               for i, layer in enumerate(layers)]
    was_training = causal_lm.training
    causal_lm.eval()
    try:
        for ids in batches:
            causal_lm(input_ids=ids.long(), use_cache=False)
            count += ids.numel()
    finally:
        for handle in handles:
            handle.remove()
        causal_lm.train(was_training)
    if not count:
        raise ValueError('block_influence needs at least one calibration batch')
    return (1 - sums / count).float()


@torch.no_grad()
def drop_layers_by_influence(algorithm: nn.Module, influence: torch.Tensor, target: float,
                             resource: str = 'params') -> float:
    """Set a Llama DMS search model (built with the depth of its decoder layers searched) to
    ShortGPT's structure: every width kept, the layers of lowest Block Influence removed, as
    many as bring the exact cost closest to ``target`` (the cheaper one on a tie).

    Returns:
        float: the exact cost of the structure set.

    Raises:
        ValueError: the depth of the decoder layers is not searched (build the search model
            with ``model.mutator.search_depth=True``), or ``influence`` has another length.
    """
    depths = algorithm.space.depth_mutables()
    if len(depths) != 1:
        raise ValueError(f'drop_layers_by_influence needs the depth of the decoder layers '
                         f'searched (one depth stage), found {len(depths)}: build the search '
                         'model with model.mutator.search_depth=True')
    blocks = depths[0]
    if influence.numel() != blocks.num_elements:
        raise ValueError(f'drop_layers_by_influence: {influence.numel()} Block Influence '
                         f'values for {blocks.num_elements} decoder layers')
    for mutable in algorithm.space.width_mutables():
        mutable.set_kept(mutable.num_elements)
    blocks.importance.copy_(influence.to(blocks.importance))  # kept: the highest BI
    costs = {}
    for kept in range(blocks.num_elements, blocks.min_elements - 1, -1):
        blocks.set_kept(kept)
        costs[kept] = algorithm.estimator.estimate(resource, hard=True).item()
    kept = min(costs, key=lambda k: (abs(costs[k] - target), costs[k]))
    blocks.set_kept(kept)
    return costs[kept]
