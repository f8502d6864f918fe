# Copyright (c) mmdms contributors. All rights reserved.
"""The searched structure of a DMS model as a plain dict (``subnet.json``).

Everything is read from the hard masks (kept iff ``m >= 0.5``) through the algorithm's
:class:`~mmdms.models.search_space.SearchSpace`, the record the resource estimator also counts
from, so the exported structure and its counted cost cannot disagree. The dict serialises it:

* ``macs``, ``params``, ``input_shape``: the static subnet's cost as the estimator counts it with
  hard masks (per sample, at ``input_shape``), and ``supernet``: the same for the supernet;
* ``latency_ms``, ``supernet.latency_ms``, ``latency_model`` (only when the estimator has a
  fitted latency model, i.e. after a latency-constrained search): the predicted latency of the
  static subnet and of the supernet in ms (corrected to the measured supernet, see
  :mod:`mmdms.models.task_modules.latency_model`), and how the fit was made (correction,
  measured supernet latency, threads, device; batch and input: ``input_shape``);
* ``widths``: per searched width (channel group, heads, head dims, MLP hidden) its ``total``,
  ``kept`` count and kept ``indices``;
* ``stages``: per depth-searched stage its ``blocks``, ``total`` and ``kept_blocks`` (and
  ``tuple_blocks``, where some return ``(x, *further arguments)``: MViT-V2's ``(x, out_size)``);
  ``removed_blocks``: the blocks that become identities;
* ``attentions``: per searched attention the kept heads, qk dims and v dims;
* ``layers``: per masked conv / linear / norm layer (in model order) its type, its layer rule's
  kind, channel counts and kept input and output channel indices (``null``: all kept);
  ``free_params``: parameters owned by no layer
  (ViT class token, position embedding) with the kept indices of their last axis (of ``axis``
  where it is given).

The static model is then a pure function of the architecture config and this dict
(:func:`~mmdms.structures.static_prune.prune_to_subnet`).
"""
import json
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch.nn as nn
from torch import Tensor

from mmdms.models.layer_rules import SubnetError, layer_channels, rule_for

SUBNET_FORMAT = 'mmdms-subnet/1'


def layer_type(module: nn.Module) -> str:
    """The static layer type of a (possibly DMS) layer: the class its DMS op stands for."""
    factory = getattr(module, 'static_op_factory', None)
    return factory.__name__ if isinstance(factory, type) else type(module).__name__


def kept_indices(mask: Optional[Tensor], size: int, where: str) -> Optional[List[int]]:
    """Indices where the hard ``mask`` is 1 (``None`` if every one of ``size`` is kept)."""
    if mask is None:
        return None
    if mask.numel() != size:
        raise SubnetError(f'{where}: the mask has {mask.numel()} entries for {size} channels')
    kept = [int(i) for i in mask.nonzero().flatten()]
    if not kept:
        raise SubnetError(f'{where}: every channel is pruned; a layer must keep at least one')
    return None if len(kept) == size else kept


def _choice(mutable) -> Dict:
    mask = mutable.hard_mask
    return dict(total=mask.numel(), kept=int(mask.sum()),
                indices=[int(i) for i in mask.nonzero().flatten()])


def _inside(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + '.') for p in prefixes)


def subnet_from_algorithm(algorithm) -> Dict:
    """The structure the hard masks of a :class:`~mmdms.models.DMS` model select.

    Args:
        algorithm: a DMS search model (``architecture``, ``space``, ``estimator``).

    Returns:
        dict: the content of ``subnet.json`` (see the module docstring).
    """
    space, estimator = algorithm.space, algorithm.estimator
    modules = dict(algorithm.architecture.named_modules())
    params = dict(algorithm.architecture.named_parameters())
    params.update(algorithm.architecture.named_buffers())  # a fixed position table

    widths = {key: _choice(group.mutable) for key, group in space.widths.items()}

    stages, removed = {}, []
    for key, stage in space.stages.items():
        kept = stage.mutable.kept_blocks()
        stages[key] = dict(blocks=list(stage.blocks), total=len(stage.blocks), kept=len(kept),
                           kept_blocks=kept)
        if stage.tuple_blocks:
            stages[key]['tuple_blocks'] = list(stage.tuple_blocks)
        removed += [n for i, n in enumerate(stage.blocks) if i not in kept]

    attentions = {name: dict(heads=_choice(att.heads), qk_dims=_choice(att.qk_dims),
                             v_dims=_choice(att.v_dims))
                  for name, att in space.attentions.items()}

    order = {name: i for i, name in enumerate(modules)}
    layers = {}
    for name, masks in sorted(space.layers.items(), key=lambda item: order[item[0]]):
        module = modules[name]
        c_in, c_out = layer_channels(module)
        layers[name] = dict(type=layer_type(module), kind=rule_for(module).kind,
                            in_channels=c_in, out_channels=c_out,
                            kept_in=kept_indices(masks.in_mask(True), c_in, f"'{name}' input"),
                            kept_out=kept_indices(masks.out_mask(True), c_out,
                                                  f"'{name}' output"))

    free_params = {}
    for name, fn in space.params.items():
        axis = space.param_axis(name)
        size = params[name].shape[axis]
        free_params[name] = dict(size=size, kept=kept_indices(fn(True), size, f"'{name}'"))
        if axis != -1:  # (absent: the last axis, as in subnets written before axes existed)
            free_params[name]['axis'] = axis

    supernet = dict(macs=_count(estimator.estimate('macs', full=True)),
                    params=_count(estimator.estimate('params', full=True)))
    latency = {}
    if getattr(estimator, 'latency_model', None) is not None:
        supernet['latency_ms'] = float(estimator.estimate('latency', full=True))
        latency = dict(latency_ms=float(estimator.estimate('latency', hard=True)),
                       latency_model=estimator.latency_model.summary())
    return dict(
        format=SUBNET_FORMAT,
        input_shape=list(estimator.input_shape),
        macs=_count(estimator.estimate('macs', hard=True)),
        params=_count(estimator.estimate('params', hard=True)),
        **latency,
        supernet=supernet,
        widths=widths,
        stages=stages,
        removed_blocks=removed,
        attentions=attentions,
        layers=layers,
        free_params=free_params)


def _count(value) -> int:
    return int(round(float(value)))


def kept_section_widths(kept: Optional[Sequence[int]],
                        sections: Sequence[int]) -> Tuple[int, ...]:
    """How many of the ``kept`` channel indices (``None``: all) lie in each of the consecutive
    ``sections`` (e.g. the halves a module splits a layer's output into)."""
    if kept is None:
        return tuple(sections)
    widths, start = [], 0
    for size in sections:
        widths.append(sum(start <= i < start + size for i in kept))
        start += size
    return tuple(widths)


def removed_blocks(subnet: Dict) -> List[str]:
    """Names of the blocks the subnet removes."""
    return list(subnet.get('removed_blocks', []))


def tuple_blocks(subnet: Dict) -> List[str]:
    """Names of the depth-searched blocks that return ``(x, *further arguments)``."""
    return [name for stage in subnet.get('stages', {}).values()
            for name in stage.get('tuple_blocks', [])]


def in_removed_block(name: str, subnet: Dict) -> bool:
    """Whether module ``name`` lies in a block the subnet removes."""
    return _inside(name, removed_blocks(subnet))


def dump_subnet(subnet: Dict, path: str) -> None:
    """Write ``subnet`` as indented JSON with each list of numbers on one line."""
    text = json.dumps(subnet, indent=2)
    text = re.sub(r'\[\s*(-?\d[\d,\s.eE+-]*?)\s*\]',
                  lambda m: '[' + ', '.join(re.split(r',\s*', m.group(1))) + ']', text)
    with open(path, 'w') as f:
        f.write(text + '\n')


def load_subnet(path: str) -> Dict:
    """Read a ``subnet.json`` written by :func:`dump_subnet`."""
    with open(path) as f:
        subnet = json.load(f)
    if not isinstance(subnet, dict) or subnet.get('format') != SUBNET_FORMAT:
        raise SubnetError(f"'{path}' is not a DMS subnet ({SUBNET_FORMAT}) written by "
                          'tools/export_subnet.py')
    return subnet
