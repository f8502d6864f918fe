# Copyright (c) mmdms contributors. All rights reserved.
"""DMS inside an mmengine Runner: the importance hook updates every mutable once per iteration."""
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def digits_dms_config(work_dir: str, iters: int) -> Config:
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'demo', 'digits_resnet.py'))
    cfg.model = dict(
        _scope_='mmrazor', type='DMS', architecture=dict(cfg.model, _scope_='mmpretrain'),
        mutator=dict(type='DMSMutator', parse_cfg=dict(
            type='ChannelAnalyzer', demo_input=(1, 3, 16, 16), tracer_type='FxTracer')))
    cfg.custom_hooks = [dict(type='DMSImportanceHook')]
    cfg.train_dataloader.dataset.indices = 16 * iters
    cfg.train_dataloader.batch_size = 16
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
    cfg.val_dataloader.dataset.indices = 40
    cfg.param_scheduler = []
    cfg.work_dir = work_dir
    return cfg


class CountUpdates(Hook):
    """Counts importance updates of every mutable within each iteration."""

    priority = 'LOWEST'

    def __init__(self):
        self.per_iteration = []
        self._calls = {}

    def before_train(self, runner):
        for mutable in runner.model.dms_mutables():
            original = mutable.apply_importance_statistic

            def counted(stat, mutable=mutable, original=original):
                self._calls[id(mutable)] = self._calls.get(id(mutable), 0) + 1
                return original(stat)

            mutable.apply_importance_statistic = counted

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.per_iteration.append(
            [self._calls.pop(id(m), 0) for m in runner.model.dms_mutables()])


def test_importance_is_updated_once_per_iteration_in_a_runner(tmp_path):
    runner = Runner.from_cfg(digits_dms_config(str(tmp_path), iters=3))
    counter = CountUpdates()
    runner.register_hook(counter)
    runner.train()
    mutables = runner.model.dms_mutables()
    assert len(mutables) == 12 + 4  # ResNet-18 (CIFAR stem): 12 width groups, 4 depth stages
    assert counter.per_iteration == [[1] * len(mutables)] * 3
    for mutable in mutables:
        assert mutable.importance.abs().sum() > 0, repr(mutable)
    ckpt = torch.load(osp.join(str(tmp_path), 'epoch_1.pth'), map_location='cpu')
    state = ckpt['state_dict']
    for name, value in runner.model.mutator.named_buffers():
        if name.endswith('importance'):
            assert torch.equal(state[f'mutator.{name}'], value)  # saved after the update
