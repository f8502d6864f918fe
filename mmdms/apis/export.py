# Copyright (c) mmdms contributors. All rights reserved.
"""Export the subnet a DMS search found: ``subnet.json``, ``pruned.pth`` and ``config.py``."""
import json
import os.path as osp
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from mmengine.registry import DefaultScope
from mmengine.runner.checkpoint import weights_to_cpu

from mmdms.models.algorithms import DMSSubnet
from mmdms.models.space_structure import set_structure
from mmdms.models.task_modules import LATENCY_META_KEY, LatencyModel
from mmdms.structures import SubnetError, dump_subnet, subnet_from_algorithm
from mmdms.utils import atomic_directory, check_new_directory, load_state_dict_strictly
from .retrain_config import retrain_config, strip_pretrained
from .search_model import (architecture_cfg, build_architecture, build_search_model,
                           load_config, load_search_checkpoint)

#: Largest relative output difference between the static subnet and the hard-masked search
#: model that the export accepts.
OUTPUT_TOLERANCE = 1e-4


def static_subnet(algorithm: nn.Module, cfg, subnet: Optional[Dict] = None) -> DMSSubnet:
    """The static subnet of a DMS search model, with its (searched) weights.

    Args:
        algorithm: the DMS search model.
        cfg (Config): its config (the supernet is rebuilt from it, not traced).
        subnet (dict, optional): the structure; defaults to the model's hard masks.
    """
    architecture = build_architecture(cfg)
    # DMS ops keep the keys
    load_state_dict_strictly(architecture, algorithm.architecture.state_dict())
    return DMSSubnet(architecture, subnet or subnet_from_algorithm(algorithm))


def initialized_subnet(cfg, subnet: Dict) -> DMSSubnet:
    """The static subnet freshly initialised (the architecture's ``init_weights``), for DMS_np
    retraining."""
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        model = DMSSubnet(strip_pretrained(architecture_cfg(cfg)), subnet)
    model.init_weights()
    return model


def _tensors(output) -> List[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _tensors(item)]
    return []


def check_input(algorithm: nn.Module, input_shape, seed: int = 0) -> torch.Tensor:
    """The random input of the export's output check, of shape ``input_shape``: what the
    search model's architecture makes with ``random_inputs(shape, generator)`` if it has that
    method (token ids over the vocabulary for a language model), else a standard normal
    tensor."""
    generator = torch.Generator().manual_seed(seed)
    architecture = getattr(algorithm, 'architecture', algorithm)
    make = getattr(architecture, 'random_inputs', None)
    if make is not None:
        return make(tuple(input_shape), generator)
    return torch.randn(tuple(input_shape), generator=generator)


def hard_mask_difference(algorithm: nn.Module, static: nn.Module, input_shape,
                         seed: int = 0) -> float:
    """Largest relative difference, over all outputs, between ``static`` and the search model
    with every mask fixed hard (eval mode, ``tensor`` mode, a random input:
    :func:`check_input`).

    The search model's mutables stay fixed afterwards: use it for nothing else.
    """
    for mutable in algorithm.dms_mutables():
        if not mutable.is_fixed:
            mutable.fix_chosen()
    algorithm.eval()
    static.eval()
    x = check_input(algorithm, input_shape, seed)
    with torch.no_grad():
        expected = _tensors(algorithm(x, mode='tensor'))
        try:
            actual = _tensors(static(x, mode='tensor'))
        except RuntimeError as e:
            raise SubnetError(
                f'The static subnet fails to run ({e}). A module whose forward reads a channel '
                'count that pruning changed needs a family adapter with a static rule: '
                'mmdms.models.adapters.FamilyAdapter.static_rule') from e
    if len(expected) != len(actual) or any(a.shape != e.shape for a, e in zip(actual, expected)):
        return float('inf')
    return max(((a - e).abs().max() / e.abs().max().clamp_min(1e-12)).item()
               for a, e in zip(actual, expected))


def _human(count: float) -> str:
    for unit, scale in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if count >= scale:
            return f'{count / scale:.3f}{unit}'
    return f'{count:.0f}'


def resource_table(subnet: Dict) -> str:
    """Supernet vs subnet MACs and parameters, as a small table."""
    rows = [('', 'supernet', 'subnet', 'subnet/supernet')]
    for key, label in (('macs', 'MACs'), ('params', 'params')):
        full, kept = subnet['supernet'][key], subnet[key]
        rows.append((label, _human(full), _human(kept), f'{100 * kept / full:.1f}%'))
    if 'latency_ms' in subnet:  # predicted, on the machine the latency model was fitted on
        full, kept = subnet['supernet']['latency_ms'], subnet['latency_ms']
        rows.append(('latency (ms)', f'{full:.3f}', f'{kept:.3f}', f'{100 * kept / full:.1f}%'))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ['  '.join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                       enumerate(zip(row, widths))) for row in rows]
    shape = 'x'.join(str(s) for s in subnet['input_shape'])
    return '\n'.join([f'per sample at input {shape}:'] + lines)


def read_structure(path: str) -> Dict[str, int]:
    """The structure in JSON file ``path``: its ``structure`` entry (an evolution result) or
    the whole file, ``{'width:<key>' | 'depth:<key>': kept count}``.

    Raises:
        SubnetError: the file holds no such mapping.
    """
    with open(path) as f:
        data = json.load(f)
    found = data.get('structure', data) if isinstance(data, dict) else None
    if not (isinstance(found, dict) and found and
            all(isinstance(k, str) and k.split(':', 1)[0] in ('width', 'depth') and
                isinstance(v, int) for k, v in found.items())):
        raise SubnetError(f"'{path}' holds no structure: expected a JSON object mapping "
                          "'width:<key>' / 'depth:<key>' to kept counts, or one under "
                          "'structure' (as EvolutionSearchHook's evolution*.json)")
    return found


def export_subnet(config,
                  checkpoint: str,
                  work_dir: str,
                  reinit: bool = False,
                  force: bool = False,
                  cfg_options: Optional[Dict] = None,
                  structure: Optional[str] = None) -> Dict:
    """Export the subnet of a DMS search checkpoint to ``work_dir``.

    Writes ``subnet.json`` (the structure and its MACs / params, and its predicted latency if
    the checkpoint comes from a latency-constrained search), ``pruned.pth`` (an mmengine
    checkpoint of the static :class:`~mmdms.models.DMSSubnet`: the searched weights sliced to
    the kept channels, or with ``reinit`` a fresh initialisation) and ``config.py`` (the search
    config's data, schedule and evaluators around that model; ``tools/train.py`` retrains it,
    ``tools/test.py`` tests it). The static model is checked against the hard-masked search
    model before anything is written; the directory appears complete or not at all.

    Args:
        config (str | Config): the search config.
        checkpoint (str): a checkpoint of its search model.
        work_dir (str): the directory to create.
        reinit (bool): initialise the subnet afresh (DMS_np retraining) instead of keeping the
            searched weights; ``config.py`` then loads nothing.
        force (bool): replace an existing ``work_dir``.
        cfg_options (dict, optional): overrides merged into the config.
        structure (str, optional): a JSON file whose ``structure`` (or the file itself) maps
            every width and depth of the search space to its kept count
            (:mod:`~mmdms.models.space_structure`), e.g. one budget's ``evolution_0.25.json``
            of an :class:`~mmdms.engine.EvolutionSearchHook` that searched several: that
            structure is exported instead of the checkpoint's.

    Returns:
        dict: ``work_dir``, the written ``files``, ``macs``, ``params``, ``latency_ms``
        (``None`` unless the search was latency-constrained), ``supernet``,
        ``input_shape``, ``max_rel_output_diff`` and the printable ``table``.

    Raises:
        FileExistsError: ``work_dir`` exists and ``force`` is not set.
        CheckpointMismatchError: the checkpoint belongs to another config.
        SubnetError: the structure cannot be exported (or the static model would compute
            something else than the search model).
    """
    work_dir = osp.abspath(work_dir)
    check_new_directory(work_dir, force)  # before the slow part
    kept = read_structure(structure) if structure is not None else None
    cfg = load_config(config, cfg_options)
    algorithm = build_search_model(cfg)
    meta = load_search_checkpoint(algorithm, checkpoint, cfg.filename or str(config))
    if meta.get(LATENCY_META_KEY) is not None:  # a latency search: subnet.json predicts it
        algorithm.estimator.latency_model = LatencyModel.from_dict(meta[LATENCY_META_KEY])
    if kept is not None:
        try:
            set_structure(algorithm, kept)
        except KeyError as e:
            raise SubnetError(f"'{structure}' is not a structure of this search space: "
                              f'{e.args[0]}') from None
    algorithm.eval()
    subnet = subnet_from_algorithm(algorithm)
    static = static_subnet(algorithm, cfg, subnet)
    diff = hard_mask_difference(algorithm, static, subnet['input_shape'])
    if not diff <= OUTPUT_TOLERANCE:
        raise SubnetError(f'The static subnet computes something else than the hard-masked '
                          f'search model (max relative difference {diff:.3g}); a layer the '
                          'export does not know how to prune?')
    model = initialized_subnet(cfg, subnet) if reinit else static
    source = dict(config=osp.abspath(cfg.filename) if cfg.filename else None,
                  checkpoint=osp.abspath(checkpoint), reinit=reinit,
                  max_rel_output_diff=diff)
    if structure is not None:
        source['structure'] = osp.abspath(structure)
    subnet = dict(subnet, source=source)
    ckpt_meta = dict(mmdms_subnet=dict(source, macs=subnet['macs'], params=subnet['params']))
    if 'latency_ms' in subnet:
        ckpt_meta['mmdms_subnet']['latency_ms'] = subnet['latency_ms']
    if meta.get('dataset_meta') is not None:
        ckpt_meta['dataset_meta'] = meta['dataset_meta']
    files = ('subnet.json', 'pruned.pth', 'config.py')
    with atomic_directory(work_dir, force) as tmp:
        dump_subnet(subnet, osp.join(tmp, 'subnet.json'))
        torch.save(dict(meta=ckpt_meta, state_dict=weights_to_cpu(model.state_dict())),
                   osp.join(tmp, 'pruned.pth'))
        retrain_config(cfg, reinit).dump(osp.join(tmp, 'config.py'))
    return dict(work_dir=work_dir, files={f: osp.join(work_dir, f) for f in files},
                macs=subnet['macs'], params=subnet['params'], supernet=subnet['supernet'],
                latency_ms=subnet.get('latency_ms'),
                input_shape=subnet['input_shape'], max_rel_output_diff=diff,
                table=resource_table(subnet))
