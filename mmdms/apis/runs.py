# Copyright (c) mmdms contributors. All rights reserved.
"""Run a search or a (re)training from a config with an mmengine Runner, as tools/train.py does,
and return what a pipeline needs next (the demo and the quality benchmark chain these)."""
import os.path as osp
import time
from typing import Dict, Optional

from mmengine.config import Config
from mmengine.runner import Runner


def _runner(config: str, work_dir: str, cfg_options: Optional[Dict]) -> Runner:
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.work_dir = work_dir
    return Runner.from_cfg(cfg)


def run_search(config: str, work_dir: str, cfg_options: Optional[Dict] = None) -> Dict:
    """Train a DMS search config.

    Returns:
        dict: ``checkpoint`` (the last epoch's), ``supernet`` and ``target`` (final ``r_t``)
        costs of the ResourceLossHook's resource, ``seconds`` of training.
    """
    runner = _runner(config, work_dir, cfg_options)
    start = time.perf_counter()
    runner.train()
    seconds = time.perf_counter() - start
    hook = next(h for h in runner.hooks if type(h).__name__ == 'ResourceLossHook')
    return dict(checkpoint=osp.join(work_dir, f'epoch_{runner.max_epochs}.pth'),
                supernet=hook.supernet_cost, target=hook.final, seconds=seconds)


def run_training(config: str, work_dir: str, cfg_options: Optional[Dict] = None) -> Dict:
    """Train ``config`` and return its final validation metrics and the training seconds."""
    runner = _runner(config, work_dir, cfg_options)
    start = time.perf_counter()
    runner.train()
    seconds = time.perf_counter() - start
    metrics = {k: float(v) for k, v in runner.val_loop.run().items()}
    return dict(metrics, seconds=seconds)
