# Copyright (c) mmdms contributors. All rights reserved.
"""Run a search or a (re)training from a config with an mmengine Runner, as tools/train.py does,
and return what a pipeline needs next (the demo and the quality benchmark chain these)."""
import os.path as osp
import time
from typing import Dict, Optional

from mmengine.config import Config
from mmengine.runner import IterBasedTrainLoop, Runner


def _runner(config, work_dir: str, cfg_options: Optional[Dict]) -> Runner:
    cfg = Config.fromfile(config) if isinstance(config, str) else config.copy()
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.work_dir = work_dir
    return Runner.from_cfg(cfg)


def final_checkpoint(runner: Runner) -> str:
    """The checkpoint a finished training saved last: ``epoch_{max_epochs}.pth`` of an
    epoch-based loop, ``iter_{max_iters}.pth`` of an iteration-based one (the CheckpointHook's
    names; it needs ``save_last=True`` or an interval dividing the length)."""
    by_epoch = not isinstance(runner.train_loop, IterBasedTrainLoop)
    name = f'epoch_{runner.max_epochs}.pth' if by_epoch else f'iter_{runner.max_iters}.pth'
    return osp.join(runner.work_dir, name)


def run_search(config, work_dir: str, cfg_options: Optional[Dict] = None) -> Dict:
    """Train a DMS search config (a path or a :class:`Config`).

    Returns:
        dict: ``checkpoint`` (the last epoch's or iteration's), ``supernet`` and ``target``
        (final ``r_t``) costs of the ResourceLossHook's resource, ``seconds`` of training.
    """
    runner = _runner(config, work_dir, cfg_options)
    start = time.perf_counter()
    runner.train()
    seconds = time.perf_counter() - start
    hook = next(h for h in runner.hooks if type(h).__name__ == 'ResourceLossHook')
    return dict(checkpoint=final_checkpoint(runner), supernet=hook.supernet_cost,
                target=hook.final, seconds=seconds)


def run_training(config, work_dir: str, cfg_options: Optional[Dict] = None) -> Dict:
    """Train ``config`` (a path or a :class:`Config`) and return its final validation metrics,
    the training ``seconds`` and the final ``checkpoint``."""
    runner = _runner(config, work_dir, cfg_options)
    start = time.perf_counter()
    runner.train()
    seconds = time.perf_counter() - start
    metrics = {k: float(v) for k, v in runner.val_loop.run().items()}
    return dict(metrics, seconds=seconds, checkpoint=final_checkpoint(runner))
