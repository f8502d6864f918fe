# Copyright (c) mmdms contributors. All rights reserved.
"""Turn a full-size architecture into the static subnet a ``subnet.json`` describes.

Pure slicing, no tracing: every listed layer keeps the input and output channels the subnet
names, as its layer rule slices it (:mod:`mmdms.models.layer_rules`: weights, biases and
BatchNorm statistics alike; a depthwise conv keeps ``groups`` equal to its channels), free
parameters (class token, position embedding) are sliced on their last axis and removed blocks
become :class:`~mmdms.models.architectures.RemovedBlock` identities (keeping the plain
attributes, e.g. ``out_channels``, that a parent's forward may read). Then every module whose
family adapter has a static rule (:mod:`mmdms.models.adapters`) is made consistent with its
sliced layers: a searched attention becomes a
:class:`~mmdms.models.architectures.PrunedMultiheadAttention`, a module whose ``forward`` reads a
channel count (a split size) reads the kept one.
"""
from typing import Dict, Optional, Sequence

import torch.nn as nn

from mmdms.models.adapters.base import adapter_for
from mmdms.models.architectures import RemovedBlock
from mmdms.models.layer_rules import SubnetError, layer_channels, rule_for, select_param
from .subnet_spec import in_removed_block, removed_blocks, tuple_blocks


def prune_layer(module: nn.Module, kept_in: Optional[Sequence[int]],
                kept_out: Optional[Sequence[int]], name: str = '') -> None:
    """Keep input channels ``kept_in`` and output channels ``kept_out`` of ``module`` in place
    (``None``: all), as its layer rule slices it."""
    rule = rule_for(module)
    if rule is None:
        raise SubnetError(f"'{name}' ({type(module).__name__}) is not a layer with a layer rule; "
                          'the subnet cannot slice it')
    rule.prune(module, kept_in, kept_out, name)


def check_subnet_fits(model: nn.Module, subnet: Dict) -> None:
    """Raise one :class:`SubnetError` listing every layer, parameter or block of ``subnet``
    that ``model`` lacks or has with other channel counts."""
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    params.update(model.named_buffers())  # a fixed position table
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
        elif params[name].shape[spec.get('axis', -1)] != spec['size']:
            problems.append(f"'{name}' has {params[name].shape[spec.get('axis', -1)]} entries "
                            f"on axis {spec.get('axis', -1)}, the subnet {spec['size']}")
    if problems:
        shown = problems[:20] + ([f'... and {len(problems) - 20} more'] if len(problems) > 20
                                 else [])
        raise SubnetError('The subnet does not fit this architecture (was it exported from '
                          'another config?): ' + '; '.join(shown))


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
    returning_tuples = set(tuple_blocks(subnet))
    for name in removed_blocks(subnet):
        _replace(model, name, RemovedBlock.of(model.get_submodule(name), name,
                                              returns_args=name in returning_tuples))
    for name, layer in subnet.get('layers', {}).items():
        if not in_removed_block(name, subnet):
            prune_layer(model.get_submodule(name), layer['kept_in'], layer['kept_out'], name)
    for name, spec in subnet.get('free_params', {}).items():
        if in_removed_block(name, subnet):
            continue  # a layer scale of a removed block went with it
        owner_name, _, attr = name.rpartition('.')
        owner = model.get_submodule(owner_name) if owner_name else model
        select_param(owner, attr, spec.get('axis', -1), spec['kept'])
    for name, module in list(model.named_modules()):
        adapter = adapter_for(module, 'static_rule')
        if adapter is not None and not in_removed_block(name, subnet):
            adapter.static_rule(module, name, subnet)
    return model
