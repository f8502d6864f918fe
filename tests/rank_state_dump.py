# Copyright (c) mmdms contributors. All rights reserved.
"""Test helper for multi-process runs: every rank writes its own model state at the end.

mmengine checkpoints hold rank 0's state only. Build this hook by its import path, e.g.
``--cfg-options default_hooks.rank_state_dump.type=rank_state_dump.RankStateDumpHook`` with
``tests/`` on ``PYTHONPATH``; each rank then writes ``<work_dir>/rank<r>.pth``.
"""
import os.path as osp

import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper


class RankStateDumpHook(Hook):

    priority = 'LOWEST'

    def after_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        depth = getattr(getattr(model, 'mutator', None), 'depth_mutables', [])
        norms = sorted({type(m).__name__ for m in model.modules()
                        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)})
        torch.save(dict(state_dict=state, frozen=[m.is_frozen for m in depth], norm_types=norms,
                        world_size=get_world_size(), iter=runner.iter, epoch=runner.epoch),
                   osp.join(runner.work_dir, f'rank{get_rank()}.pth'))
