# Copyright (c) mmdms contributors. All rights reserved.
"""A language-model search (a tiny Llama, iteration-based) follows the target schedule per
iteration, and stopped and resumed ends exactly where an uninterrupted one does: same
structure, weights, importance and AdamW state."""
import os.path as osp
import random

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

pytest.importorskip('transformers')

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'dms', 'demo', 'tiny_llama_search.py')
ITERS, STOP = 6, 3


def tiny_llama_config(work_dir: str, name: str = 'llm') -> Config:
    """configs/dms/demo/tiny_llama_search.py made tiny: a 2-layer GQA Llama, 16-byte blocks of
    this repository's README (text that every checkout has), 6 iterations, the last 2 matching
    the widths to the target."""
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict(dict(
        model=dict(architecture=dict(config=dict(hidden_size=32, intermediate_size=48,
                                                 num_hidden_layers=2)),
                   mutator=dict(parse_cfg=dict(demo_input=(1, 16)))),
        train_cfg=dict(max_iters=ITERS, val_interval=ITERS),
        default_hooks=dict(checkpoint=dict(interval=STOP), logger=dict(interval=1)),
        randomness=dict(seed=0, deterministic=True)))
    for split, loader in (('train', cfg.train_dataloader), ('val', cfg.val_dataloader)):
        loader.dataset.update(data_root=REPO, pattern='README.md', block_size=16,
                              val_fraction=0.1)
        loader.batch_size = 4
    cfg.val_dataloader.dataset.max_files = 1
    for hook in cfg.custom_hooks:
        if hook['type'] == 'ResourceLossHook':
            hook.update(width_only_iters=2, save_structure=False)
    cfg.work_dir = work_dir
    cfg.experiment_name = name  # distinct message hubs and loggers in one process
    return cfg


class Interrupted(Exception):
    pass


class StopAfterIter(Hook):
    """Kills the run after iteration ``iteration`` (1-based) was checkpointed, as a crash
    would."""

    priority = 'LOWEST'  # after the CheckpointHook

    def __init__(self, iteration):
        self.iteration = iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.iteration:
            raise Interrupted


def test_resumed_llm_search_reproduces_the_uninterrupted_one(tmp_path):
    uninterrupted = Runner.from_cfg(tiny_llama_config(str(tmp_path / 'a'), 'llm_resume_a'))
    uninterrupted.train()

    stopped = Runner.from_cfg(tiny_llama_config(str(tmp_path / 'b'), 'llm_resume_b'))
    stopped.register_hook(StopAfterIter(STOP))
    with pytest.raises(Interrupted):
        stopped.train()
    del stopped
    torch.manual_seed(123), np.random.seed(123), random.seed(123)  # a new process re-seeds

    cfg = tiny_llama_config(str(tmp_path / 'b'), 'llm_resume_c')
    cfg.resume, cfg.load_from = True, osp.join(str(tmp_path / 'b'), f'iter_{STOP}.pth')
    resumed = Runner.from_cfg(cfg)
    resumed.train()

    assert resumed.iter == uninterrupted.iter == ITERS
    a, c = uninterrupted.model, resumed.model
    assert c.resource_target == a.resource_target
    hub_a, hub_c = uninterrupted.message_hub, resumed.message_hub
    # an iteration-based search follows Eq. 10 per iteration (mmengine's IterBasedTrainLoop
    # also has max_epochs, 1: read as epochs, the final target came at once), then matches
    hook = next(h for h in uninterrupted.hooks if type(h).__name__ == 'ResourceLossHook')
    assert not hook.by_epoch and hook.decay_steps == ITERS - 2
    r_t = hub_a.get_scalar('train/r_t').data[0]
    assert all(r_t[i] > r_t[i + 1] for i in range(ITERS - 3))  # decaying over iterations 1-4
    assert r_t[-2] == r_t[-1] and a.resource_target == hook.final and a.resource_two_sided
    for key in ('train/r_t', 'train/r_c', 'train/loss', 'train/loss_resource'):
        assert hub_c.get_scalar(key).current() == hub_a.get_scalar(key).current(), key
    state_a, state_c = a.state_dict(), c.state_dict()
    assert state_a.keys() == state_c.keys()
    assert [k for k in state_a if not torch.equal(state_a[k], state_c[k])] == []
    # the search moved: some width is pruned, the importance was updated
    assert any(m.activated_channels < m.num_channels for m in a.space.width_mutables())
    assert all(m.importance.abs().sum() > 0 for m in a.space.width_mutables())
    adam_a = uninterrupted.optim_wrapper.state_dict()['state']
    adam_c = resumed.optim_wrapper.state_dict()['state']
    assert adam_a.keys() == adam_c.keys()
    assert all(torch.equal(adam_a[i][s], adam_c[i][s]) for i in adam_a
               for s in ('exp_avg', 'exp_avg_sq'))
