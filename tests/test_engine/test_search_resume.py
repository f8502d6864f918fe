# Copyright (c) mmdms contributors. All rights reserved.
"""A search stopped and resumed ends exactly where an uninterrupted one does, and a checkpoint of
the width-only phase resumes with the depth it froze."""
import os.path as osp
import random

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner

from dms_test_utils import digits_search_config
from mmdms.engine import RandomStateHook


class Interrupted(Exception):
    pass


class StopAfterEpoch(Hook):
    """Kills the run after epoch ``epoch`` (1-based) was checkpointed, as a crash would."""

    priority = 'LOWEST'  # after the CheckpointHook

    def __init__(self, epoch):
        self.epoch = epoch

    def after_train_epoch(self, runner):
        if runner.epoch + 1 == self.epoch:
            raise Interrupted


class ProbeDepth(Hook):
    """Records the depth mutables' frozen state when training (re)starts."""

    def before_train(self, runner):
        self.frozen = [(m.is_frozen, m.frozen_mask.clone())
                       for m in runner.model.mutator.depth_mutables]


def config(work_dir, name):
    # 3 epochs of 4 iterations: the target decays over epoch 1, epochs 2-3 search width only
    cfg = digits_search_config(work_dir, epochs=3, width_only=2)
    cfg.randomness = dict(seed=0, deterministic=True)
    cfg.train_dataloader.num_workers = 0
    cfg.train_cfg.val_interval = 1  # validating after a checkpoint must not change what follows
    cfg.experiment_name = name  # distinct message hubs and loggers in one process
    return cfg


def test_resumed_search_reproduces_the_uninterrupted_one(tmp_path):
    uninterrupted = Runner.from_cfg(config(str(tmp_path / 'a'), 'resume_a'))
    uninterrupted.train()

    stopped = Runner.from_cfg(config(str(tmp_path / 'b'), 'resume_b'))
    stopped.register_hook(StopAfterEpoch(2))
    with pytest.raises(Interrupted):
        stopped.train()
    ckpt_path = osp.join(str(tmp_path / 'b'), 'epoch_2.pth')
    ckpt = torch.load(ckpt_path, map_location='cpu')
    frozen_saved = [v for k, v in ckpt['state_dict'].items() if k.endswith('frozen_mask')]
    assert frozen_saved and all((f >= 0).all() for f in frozen_saved)  # the width-only phase
    del stopped
    # the resumed process re-seeds every generator; the hook puts the saved states back
    torch.manual_seed(123), np.random.seed(123), random.seed(123)

    cfg = config(str(tmp_path / 'b'), 'resume_c')
    cfg.resume, cfg.load_from = True, ckpt_path
    resumed = Runner.from_cfg(cfg)
    probe = ProbeDepth()
    resumed.register_hook(probe)
    resumed.train()

    # the checkpoint's frozen depth came back before any epoch could freeze it anew
    assert [f for f, _ in probe.frozen] == [True] * len(frozen_saved)
    for (_, mask), saved in zip(probe.frozen, frozen_saved):
        assert torch.equal(mask, saved)
    # schedule position and the hook's target
    assert (resumed.epoch, resumed.iter) == (uninterrupted.epoch, uninterrupted.iter) == (3, 12)
    a, c = uninterrupted.model, resumed.model
    assert c.resource_target == a.resource_target and c.resource_two_sided == a.resource_two_sided
    hub_a, hub_c = uninterrupted.message_hub, resumed.message_hub
    for key in ('train/r_t', 'train/r_c', 'train/loss', 'train/loss_resource'):
        assert hub_c.get_scalar(key).current() == hub_a.get_scalar(key).current(), key
    # every weight, ratio, importance and frozen mask, bit for bit, and the optimiser's momentum
    state_a, state_c = a.state_dict(), c.state_dict()
    assert state_a.keys() == state_c.keys()
    different = [k for k in state_a if not torch.equal(state_a[k], state_c[k])]
    assert different == []
    momentum_a = uninterrupted.optim_wrapper.state_dict()['state']
    momentum_c = resumed.optim_wrapper.state_dict()['state']
    assert all(torch.equal(momentum_a[i]['momentum_buffer'], momentum_c[i]['momentum_buffer'])
               for i in momentum_a)


def test_random_state_round_trip_and_validation_leaves_it_alone(tmp_path):
    hook = RandomStateHook()
    hook.before_save_checkpoint(None, saved := dict(meta=dict(iter=4)))
    # plain tensors and Python values: loads with torch.load(weights_only=True)
    torch.save(saved, tmp_path / 'ckpt.pth')
    checkpoint = torch.load(tmp_path / 'ckpt.pth', weights_only=True)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    # a resumed run: the runner has reached the checkpoint's iteration when training starts
    hook.after_load_checkpoint(None, checkpoint)
    hook.before_train(type('R', (), dict(iter=4, _randomness_cfg={}))())
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]
    # load_from without resume starts at iteration 0: the generators are left as seeded
    hook.after_load_checkpoint(None, checkpoint)
    hook.before_train(type('R', (), dict(iter=0, _randomness_cfg={}))())
    assert not torch.equal(torch.rand(3), expected[0])

    state = torch.get_rng_state()
    hook.before_val(None)
    iter(torch.utils.data.DataLoader([1, 2]))  # a data loader draws a seed when it starts
    hook.after_val(None)
    assert torch.equal(torch.get_rng_state(), state)
