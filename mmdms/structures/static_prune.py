# Copyright (c) mmdms contributors. All rights reserved.
"""Turn a full-size architecture into the static subnet a ``subnet.json`` describes.

Pure slicing, no tracing: every listed conv / linear / norm layer keeps the input and output
channels the subnet names (weights, biases and BatchNorm statistics alike; a depthwise conv keeps
``groups`` equal to its channels), each searched attention becomes a
:class:`~mmdms.models.architectures.PrunedMultiheadAttention`, free parameters (class token,
position embedding) are sliced on their last axis and removed blocks become
:class:`~mmdms.models.architectures.RemovedBlock` identities.

A module that reads a channel count in its ``forward`` (e.g. a split size) needs a rule that
updates it after its layers are sliced: :func:`register_static_rule` (the rules for the model
families' modules, e.g. mmyolo's ``CSPLayerWithTwoConv``, are in :mod:`.static_rules`).
"""
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmdms.models.architectures import PrunedMultiheadAttention, RemovedBlock
from .subnet_spec import SubnetError, in_removed_block, layer_channels, removed_blocks


def _select(tensor: torch.Tensor, dim: int, indices: Optional[Sequence[int]]) -> torch.Tensor:
    if indices is None:
        return tensor.detach().clone()
    index = torch.as_tensor(indices, dtype=torch.long, device=tensor.device)
    return tensor.detach().index_select(dim, index).clone()


def _set_param(module: nn.Module, name: str, value: torch.Tensor) -> None:
    old = getattr(module, name)
    setattr(module, name, nn.Parameter(value, requires_grad=old.requires_grad))


def _channelwise(kept_in, kept_out, name: str) -> Optional[List[int]]:
    """The one index list of a channel-wise layer (BatchNorm, depthwise conv)."""
    if kept_in is not None and kept_out is not None and list(kept_in) != list(kept_out):
        raise SubnetError(f"'{name}' is channel-wise but keeps different input and output "
                          'channels')
    return kept_out if kept_out is not None else kept_in


def prune_layer(module: nn.Module, kept_in: Optional[Sequence[int]],
                kept_out: Optional[Sequence[int]], name: str = '') -> None:
    """Keep input channels ``kept_in`` and output channels ``kept_out`` of ``module`` in place
    (``None``: all)."""
    if isinstance(module, nn.Conv2d):
        if module.groups == module.in_channels == module.out_channels and module.groups > 1:
            kept = _channelwise(kept_in, kept_out, name)
            _set_param(module, 'weight', _select(module.weight, 0, kept))
            if module.bias is not None:
                _set_param(module, 'bias', _select(module.bias, 0, kept))
            width = module.weight.shape[0]
            module.in_channels = module.out_channels = module.groups = width
            return
        if module.groups != 1 and (kept_in is not None or kept_out is not None):
            raise SubnetError(f"'{name}' is a grouped conv (groups={module.groups}); only "
                              'plain and depthwise convs can be pruned')
        weight = _select(_select(module.weight, 0, kept_out), 1, kept_in)
        _set_param(module, 'weight', weight)
        if module.bias is not None:
            _set_param(module, 'bias', _select(module.bias, 0, kept_out))
        module.out_channels, module.in_channels = weight.shape[0], weight.shape[1]
    elif isinstance(module, nn.Linear):
        weight = _select(_select(module.weight, 0, kept_out), 1, kept_in)
        _set_param(module, 'weight', weight)
        if module.bias is not None:
            _set_param(module, 'bias', _select(module.bias, 0, kept_out))
        module.out_features, module.in_features = weight.shape
    elif isinstance(module, _BatchNorm):
        kept = _channelwise(kept_in, kept_out, name)
        if module.affine:
            _set_param(module, 'weight', _select(module.weight, 0, kept))
            _set_param(module, 'bias', _select(module.bias, 0, kept))
        for buffer in ('running_mean', 'running_var'):
            if getattr(module, buffer, None) is not None:
                setattr(module, buffer, _select(getattr(module, buffer), 0, kept))
        module.num_features = len(kept) if kept is not None else module.num_features
    elif isinstance(module, nn.LayerNorm):
        if len(module.normalized_shape) != 1:
            raise SubnetError(f"'{name}': only a LayerNorm over the last axis can be pruned")
        kept = _channelwise(kept_in, kept_out, name)
        if module.elementwise_affine:
            _set_param(module, 'weight', _select(module.weight, 0, kept))
            if module.bias is not None:
                _set_param(module, 'bias', _select(module.bias, 0, kept))
        if kept is not None:
            module.normalized_shape = (len(kept), )
    elif isinstance(module, nn.GroupNorm):
        if kept_in is not None or kept_out is not None:
            raise SubnetError(f"'{name}': pruning a GroupNorm is not supported")
    else:
        raise SubnetError(f"'{name}' ({type(module).__name__}) is not a conv, linear or norm "
                          'layer; the subnet cannot slice it')


def check_subnet_fits(model: nn.Module, subnet: Dict) -> None:
    """Raise one :class:`SubnetError` listing every layer, parameter or block of ``subnet``
    that ``model`` lacks or has with other channel counts."""
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    problems = []
    for name, layer in subnet.get('layers', {}).items():
        module = modules.get(name)
        channels = layer_channels(module) if module is not None else None
        expected = (layer['in_channels'], layer['out_channels'])
        if module is None:
            problems.append(f"no layer '{name}'")
        elif channels != expected:
            problems.append(f"'{name}' has {channels} (in, out) channels, the subnet {expected}")
    for name in list(subnet.get('attentions', {})) + removed_blocks(subnet):
        if name not in modules:
            problems.append(f"no module '{name}'")
    for name, spec in subnet.get('free_params', {}).items():
        if name not in params:
            problems.append(f"no parameter '{name}'")
        elif params[name].shape[-1] != spec['size']:
            problems.append(f"'{name}' has last axis {params[name].shape[-1]}, the subnet "
                            f"{spec['size']}")
    if problems:
        shown = problems[:20] + ([f'... and {len(problems) - 20} more'] if len(problems) > 20
                                 else [])
        raise SubnetError('The subnet does not fit this architecture (was it exported from '
                          'another config?): ' + '; '.join(shown))


#: Module type -> ``rule(module, name, subnet)``, run after slicing on every such module that
#: is not in a removed block.
STATIC_RULES: Dict[type, Callable[[nn.Module, str, Dict], None]] = {}


def register_static_rule(module_type: type):
    """Register ``rule(module, name, subnet)`` for modules of ``module_type`` (subclasses
    included): it makes a module whose ``forward`` reads channel counts (split sizes, reshape
    widths) consistent with its sliced layers. Use as a decorator."""

    def register(rule):
        STATIC_RULES[module_type] = rule
        return rule

    return register


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def prune_to_subnet(model: nn.Module, subnet: Dict) -> nn.Module:
    """Make ``model`` (the full-size architecture) the static subnet, in place.

    Args:
        model (nn.Module): the architecture the subnet was searched on, with any weights.
        subnet (dict): the content of ``subnet.json``
            (:func:`~mmdms.structures.subnet_from_algorithm`).

    Returns:
        nn.Module: ``model``, pruned.
    """
    check_subnet_fits(model, subnet)
    for name in removed_blocks(subnet):
        _replace(model, name, RemovedBlock())
    for name, layer in subnet.get('layers', {}).items():
        if not in_removed_block(name, subnet):
            prune_layer(model.get_submodule(name), layer['kept_in'], layer['kept_out'], name)
    for name, spec in subnet.get('attentions', {}).items():
        if not in_removed_block(name, subnet):
            PrunedMultiheadAttention.convert_from(
                model.get_submodule(name), spec['heads']['kept'], spec['qk_dims']['kept'],
                spec['v_dims']['kept'])
    for name, spec in subnet.get('free_params', {}).items():
        owner_name, _, attr = name.rpartition('.')
        owner = model.get_submodule(owner_name) if owner_name else model
        _set_param(owner, attr, _select(getattr(owner, attr), -1, spec['kept']))
    if STATIC_RULES:
        for name, module in list(model.named_modules()):
            for module_type, rule in STATIC_RULES.items():
                if isinstance(module, module_type) and not in_removed_block(name, subnet):
                    rule(module, name, subnet)
    return model
