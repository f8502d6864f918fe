# Copyright (c) mmdms contributors. All rights reserved.
"""Train a language-model supernet once per setting and keep it as a Hugging Face directory,
the ``pretrained_path`` of a DMS_p search (``make demo-llm`` and the LLM benchmark share it)."""
import hashlib
import json
import os
import os.path as osp
from typing import Dict, Optional

from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner.checkpoint import _load_checkpoint
from mmrazor.registry import MODELS

from mmdms.utils import atomic_directory
from .runs import run_training

#: Config keys whose values decide the trained weights (the cache key hashes them).
SETTING_KEYS = ('model', 'train_dataloader', 'val_dataloader', 'optim_wrapper',
                'param_scheduler', 'train_cfg', 'randomness')


def setting_key(cfg: Config) -> str:
    """A short hash of what decides a training's result: :data:`SETTING_KEYS` of ``cfg``."""
    settings = {k: cfg.get(k) for k in SETTING_KEYS}
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def cached_pretraining(config, cache_root: str, cfg_options: Optional[Dict] = None) -> Dict:
    """The trained model of ``config`` (an :class:`~mmdms.models.HFCausalLM` training config),
    trained now unless ``cache_root/<key>`` holds it already (``key``: :func:`setting_key`).

    The cache directory holds ``hf/`` (``save_pretrained`` of the trained transformers model:
    the ``pretrained_path`` of a search), ``metrics.json`` (the final validation metrics, the
    training seconds and CPU-seconds) and ``config.py``; it appears complete or not at all.

    Returns:
        dict: ``hf_dir``, ``key``, ``cached`` (True when nothing was trained) and the metrics.
    """
    cfg = Config.fromfile(config) if isinstance(config, str) else config.copy()
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.model.get('type') != 'HFCausalLM':
        raise ValueError(f"cached_pretraining trains an HFCausalLM config; "
                         f"'{cfg.filename}' builds {cfg.model.get('type')!r}")
    key = setting_key(cfg)
    target = osp.abspath(osp.join(cache_root, key))
    if osp.isfile(osp.join(target, 'metrics.json')):
        with open(osp.join(target, 'metrics.json')) as f:
            return dict(json.load(f), hf_dir=osp.join(target, 'hf'), key=key, cached=True)
    os.makedirs(cache_root, exist_ok=True)
    work_dir = osp.join(osp.abspath(cache_root), f'{key}.train')
    cpu = os.times()
    metrics = run_training(cfg, work_dir)
    cpu = (os.times().user - cpu.user) + (os.times().system - cpu.system)
    with DefaultScope.overwrite_default_scope('mmrazor'):
        model = MODELS.build(cfg.model)
    state = _load_checkpoint(metrics.pop('checkpoint'), map_location='cpu')['state_dict']
    model.load_state_dict(state, strict=True)
    metrics = dict(metrics, cpu_seconds=cpu,
                   params=sum(p.numel() for p in model.model.parameters()))
    with atomic_directory(target, force=True) as tmp:
        model.model.save_pretrained(osp.join(tmp, 'hf'))
        cfg.dump(osp.join(tmp, 'config.py'))
        with open(osp.join(tmp, 'metrics.json'), 'w') as f:
            json.dump(metrics, f, indent=2)
    return dict(metrics, hf_dir=osp.join(target, 'hf'), key=key, cached=False)
