# Copyright (c) mmdms contributors. All rights reserved.
"""Width masks folded into BatchNorm's affine parameters.

A conv whose input channels are ``act(bn(y))`` and nothing else, with ``act`` positively
homogeneous (ReLU, LeakyReLU, or none), computes the same function when the channel mask ``m``
scales BatchNorm's ``gamma`` and ``beta`` instead of the conv's input:
``act(m (gamma x_hat + beta)) = m act(gamma x_hat + beta)`` for ``m >= 0``. The mask's gradient
is the same too, but the work is channel-sized instead of weight- or activation-sized (the
conv's ``W * m`` and its backward: ``benchmarks/bench_search_overhead.py``). In ResNet
bottlenecks it applies to conv2 and conv3; SiLU (EfficientNet, YOLOv8) and GELU (DeiT) are not
positively homogeneous, so their masks stay on the convs.
"""
from collections import Counter
from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.fx import Graph as FxGraph
from torch.fx import Node as FxNode
from torch.nn.modules.batchnorm import _BatchNorm

#: Activations with ``act(m x) = m act(x)`` for every ``m >= 0``.
HOMOGENEOUS_MODULES = (nn.ReLU, nn.LeakyReLU)
HOMOGENEOUS_FUNCTIONS = (F.relu, torch.relu, torch.relu_, F.leaky_relu)
HOMOGENEOUS_METHODS = ('relu', 'relu_')


def _module(model: nn.Module, node: FxNode):
    if node.op != 'call_module':
        return None
    try:
        return model.get_submodule(node.target)
    except AttributeError:
        return None


def _is_homogeneous(model: nn.Module, node: FxNode) -> bool:
    if node.op == 'call_module':
        return isinstance(_module(model, node), HOMOGENEOUS_MODULES)
    if node.op == 'call_function':
        return node.target in HOMOGENEOUS_FUNCTIONS
    return node.op == 'call_method' and node.target in HOMOGENEOUS_METHODS


def norm_act_conv_chains(fx_graph: FxGraph, model: nn.Module) -> Dict[str, str]:
    """``{conv: norm}`` for every conv whose only input is ``act(norm(...))`` that nothing else
    reads (``act`` positively homogeneous or absent; ``norm`` a BatchNorm; each called once).

    The analyzer traces a copy whose SyncBatchNorms are reverted to BatchNorm, so whether the
    norm is synchronised is decided by :func:`fold_masks_into_norms` on the model itself."""
    calls = Counter(n.target for n in fx_graph.nodes if n.op == 'call_module')
    chains = {}
    for node in fx_graph.nodes:
        if not isinstance(_module(model, node), _BatchNorm) or calls[node.target] != 1:
            continue
        producer, users = node, list(node.users)
        if len(users) == 1 and _is_homogeneous(model, users[0]) and \
                users[0].args[:1] == (node, ):
            producer, users = users[0], list(users[0].users)
        if len(users) != 1:
            continue
        consumer = users[0]
        if isinstance(_module(model, consumer), nn.Conv2d) and consumer.args == (producer, ) \
                and not consumer.kwargs and calls[consumer.target] == 1:
            chains[consumer.target] = node.target
    return chains


def _sole_mutable(container):
    """The one mutable spanning all of ``container``'s channels, else None."""
    mutables = getattr(container, 'mutable_channels', {})
    if len(mutables) != 1:
        return None
    (start, end), mutable = next(iter(mutables.items()))
    if start != 0 or end != container.num_channels or not hasattr(mutable, 'soft_mask'):
        return None
    return mutable


def fold_masks_into_norms(model: nn.Module, chains: Dict[str, str]) -> List[str]:
    """Move each chain's conv input mask onto its BatchNorm where both layers are DMS ops that
    read the same single mutable. A SyncBatchNorm keeps its own forward (the folded one would
    normalise with this process's batch alone), so its conv keeps the mask. Returns the convs
    whose mask moved."""
    folded = []
    for conv_name, norm_name in chains.items():
        try:
            conv, norm = model.get_submodule(conv_name), model.get_submodule(norm_name)
        except AttributeError:
            continue
        if not (hasattr(conv, 'fold_input_mask') and hasattr(norm, 'fold_output_mask')) or \
                isinstance(norm, nn.SyncBatchNorm):
            continue
        mutable = _sole_mutable(conv.get_mutable_attr('in_channels'))
        if mutable is None or mutable is not _sole_mutable(norm.get_mutable_attr('out_channels')):
            continue
        conv.fold_input_mask = True
        norm.fold_output_mask = True
        folded.append(conv_name)
    return folded
