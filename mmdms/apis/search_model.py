# Copyright (c) mmdms contributors. All rights reserved.
"""Build a DMS search model from its config, as the Runner does, and load its checkpoint."""
import copy
import re
from typing import Dict, Optional

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner.checkpoint import _load_checkpoint
from mmrazor.registry import MODELS

from mmdms.models.algorithms.dms_subnet import merge_data_preprocessor
from mmdms.utils import load_state_dict_strictly


class CheckpointMismatchError(RuntimeError):
    """A checkpoint whose state dict is not the search model's of the given config."""


#: Model types of a search config: DMS, and the one-shot supernet over the same space (its
#: structure exports the same way).
SEARCH_MODEL_TYPES = ('DMS', 'OneShotDMS')


def load_config(config, cfg_options: Optional[Dict] = None) -> Config:
    """The config at path ``config`` (or a :class:`Config`), with ``cfg_options`` merged."""
    cfg = Config.fromfile(config) if isinstance(config, str) else copy.deepcopy(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('model', {}).get('type') not in SEARCH_MODEL_TYPES:
        raise ValueError(f"'{cfg.filename}' is not a DMS search config: its model is "
                         f"{cfg.get('model', {}).get('type')!r}, not one of "
                         f'{", ".join(SEARCH_MODEL_TYPES)}')
    return cfg


def architecture_cfg(cfg: Config) -> Dict:
    """The supernet's config with its data preprocessor, as :class:`~mmdms.models.DMS` builds
    it."""
    model = cfg.model
    preprocessor = model.get('data_preprocessor', cfg.get('data_preprocessor'))
    architecture, _ = merge_data_preprocessor(copy.deepcopy(model.architecture),
                                              copy.deepcopy(preprocessor))
    return architecture


def build_search_model(cfg: Config) -> nn.Module:
    """The DMS search model of ``cfg`` (traced once, as the Runner would build it)."""
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        return MODELS.build(model_cfg)


def build_architecture(cfg: Config) -> nn.Module:
    """The full-size supernet of ``cfg`` without any DMS machinery (plain layers)."""
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        return MODELS.build(architecture_cfg(cfg))


def _listed(keys, limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys) - limit} more)' if len(keys) > limit else '')


def load_search_checkpoint(model: nn.Module, checkpoint: str, config_name: str = '') -> Dict:
    """Load ``checkpoint`` (an mmengine checkpoint of the search model) into ``model``, strictly.

    Raises:
        CheckpointMismatchError: one error naming the missing, unexpected and mis-shaped keys
            when the checkpoint belongs to another config.

    Returns:
        dict: the checkpoint's ``meta`` (empty if it has none).
    """
    ckpt = _load_checkpoint(checkpoint, map_location='cpu')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f"'{checkpoint}' holds no state dict")
    state = {re.sub(r'^module\.', '', k): v for k, v in state.items()}
    own = model.state_dict()
    missing = set(own) - set(state)
    unexpected = set(state) - set(own)
    shapes = {k for k in set(own) & set(state)
              if hasattr(state[k], 'shape') and tuple(state[k].shape) != tuple(own[k].shape)}
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f'missing keys ({len(missing)}): {_listed(missing)}')
        if unexpected:
            parts.append(f'unexpected keys ({len(unexpected)}): {_listed(unexpected)}')
        if shapes:
            parts.append(f'keys of another shape ({len(shapes)}): ' + _listed(
                f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}' for k in shapes))
        raise CheckpointMismatchError(
            f"Checkpoint '{checkpoint}' does not match the search model of "
            f"'{config_name or 'the config'}'; it belongs to another config (or was not saved "
            'from a DMS search). ' + '; '.join(parts))
    diverged = sorted(k for k, v in state.items() if isinstance(v, torch.Tensor)
                      and v.is_floating_point() and not torch.isfinite(v).all())
    if diverged:
        # e.g. a NaN ratio would prune every channel of its group (c' >= NaN is never true)
        raise ValueError(f"Checkpoint '{checkpoint}' holds NaN or infinite values in "
                         f'{_listed(diverged)}: the search diverged before it was saved. Export '
                         'an earlier checkpoint, and see docs/user_guide.md for the settings '
                         '(lambda_resource, lr_structure) to lower.')
    load_state_dict_strictly(model, state)
    meta = ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
    return meta if isinstance(meta, dict) else {}
