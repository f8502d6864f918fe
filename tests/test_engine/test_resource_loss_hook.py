# Copyright (c) mmdms contributors. All rights reserved.
"""ResourceLossHook in an mmengine Runner: Eq. 10 schedule, width-only phase, logging, errors."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmdms.engine import ResourceLossHook, parse_resource

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def search_config(work_dir, epochs=3, width_only=1, samples=64, **hook_args):
    """configs/dms/demo/digits_search.py shrunk to ``samples`` images per epoch."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'dms', 'demo', 'digits_search.py'))
    cfg.train_dataloader.dataset.indices = samples
    cfg.val_dataloader.dataset.indices = 40
    cfg.train_cfg = dict(by_epoch=True, max_epochs=epochs, val_interval=epochs)
    hook = dict(type='ResourceLossHook', resource='macs', target_ratio=0.5,
                width_only_epochs=width_only, match_target=True)
    hook.update(hook_args)
    cfg.custom_hooks = [dict(type='DMSImportanceHook'), hook]
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = work_dir
    return cfg


def test_parse_resource():
    assert parse_resource('0.39G', 'macs') == pytest.approx(0.39e9)
    assert parse_resource('5.3M', 'params') == pytest.approx(5.3e6)
    assert parse_resource('3ms', 'latency') == 3.0
    assert parse_resource(1e6, 'macs') == 1e6
    with pytest.raises(ValueError, match='latency targets are in ms'):
        parse_resource('3G', 'latency')
    with pytest.raises(ValueError, match='latency targets are in ms'):
        parse_resource('3ms', 'macs')
    with pytest.raises(ValueError, match='Cannot read'):
        parse_resource('fast', 'macs')


@pytest.mark.parametrize('kwargs, message', [
    (dict(resource='energy', target_ratio=0.5), "unknown resource 'energy'"),
    (dict(target='0.3G', target_ratio=0.5), 'exactly one of'),
    (dict(), 'exactly one of'),
    (dict(target=0), 'must be positive'),
    (dict(target='-1G'), 'must be positive'),
    (dict(target_ratio=-0.5), 'must be positive'),
])
def test_bad_hook_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResourceLossHook(**kwargs)


def test_iteration_schedule_follows_eq10():
    hook = ResourceLossHook(target_ratio=0.25, width_only_iters=2)
    hook.final, hook.supernet_cost, hook.decay_steps = 25.0, 100.0, 4
    targets = [hook.target_at(i) for i in range(6)]
    expected = [0.25 ** ((i + 1) / 4) * 100 for i in range(4)] + [25.0, 25.0]
    assert targets == pytest.approx(expected)


def test_search_follows_eq10_then_freezes_depth(tmp_path):
    runner = Runner.from_cfg(search_config(str(tmp_path)))
    model = runner.model
    supernet = model.supernet_resource('macs')
    runner.train()
    values, counts = runner.message_hub.get_scalar('train/r_t').data
    per_iter = (values / counts).tolist()
    iters = len(per_iter) // 3
    for epoch in range(3):
        expected = 0.5 ** min((epoch + 1) / 2, 1.0) * supernet * 1e-6
        assert per_iter[epoch * iters:(epoch + 1) * iters] == pytest.approx([expected] * iters)
    assert 'train/loss_resource' in runner.message_hub.log_scalars
    assert 'train/r_c' in runner.message_hub.log_scalars
    for key, mutable in model.mutator.stage_mutables.items():
        assert mutable.is_frozen
        depth = runner.message_hub.get_scalar(f'train/depth/{key.replace("__", ".")}')
        assert depth.current() == mutable.num_kept
    assert osp.getsize(osp.join(str(tmp_path), 'structure.png')) > 1000  # drawn at the end
    # the width-only phase keeps the frozen depth in the checkpoint
    state = torch.load(osp.join(str(tmp_path), 'epoch_3.pth'), weights_only=False)['state_dict']
    frozen = [v for k, v in state.items() if k.endswith('frozen_mask')]
    assert frozen and all((f >= 0).all() for f in frozen)


def test_target_above_supernet_fails_before_training(tmp_path):
    cfg = search_config(str(tmp_path), target_ratio=1.2)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match='not below the supernet'):
        runner.train()
    assert runner.iter == 0


def test_width_only_phase_must_leave_decay_epochs(tmp_path):
    runner = Runner.from_cfg(search_config(str(tmp_path), epochs=2, width_only=2))
    with pytest.raises(ValueError, match='leave no epochs'):
        runner.train()


def test_weight_ema_does_not_average_structure(tmp_path):
    cfg = search_config(str(tmp_path), epochs=2)
    cfg.custom_hooks.append(dict(type='EMAHook', momentum=0.5))
    runner = Runner.from_cfg(cfg)
    runner.train()
    ema_hook = next(h for h in runner.hooks if type(h).__name__ == 'EMAHook')
    ema = dict(ema_hook.ema_model.module.named_parameters())
    moved = 0
    for name, param in runner.model.named_parameters():
        if name.endswith('dms_ratio'):
            assert torch.equal(ema[name], param), name
            moved += bool(param.item() != 0)
    assert moved > 0


@pytest.mark.parametrize('land_within', [0, 1, -0.02])
def test_land_within_must_be_a_fraction(land_within):
    with pytest.raises(ValueError, match=r'land_within must be in \(0, 1\)'):
        ResourceLossHook(target_ratio=0.5, land_within=land_within)


def test_search_lands_on_the_target_before_the_last_checkpoint(tmp_path, monkeypatch):
    """A resource loss too weak to reach the target in two epochs: the landing takes the
    structure the rest of the way, and the last checkpoint (and the weight EMA) hold it."""
    from mmdms.engine.hooks import resource_loss_hook
    landings, land = [], resource_loss_hook.land_on_target

    def spy(*args, **kwargs):
        landings.append(land(*args, **kwargs))
        return landings[-1]

    monkeypatch.setattr(resource_loss_hook, 'land_on_target', spy)
    cfg = search_config(str(tmp_path), epochs=2, lambda_resource=1e-4, land_within=0.01)
    cfg.custom_hooks.append(dict(type='EMAHook', momentum=0.5))
    runner = Runner.from_cfg(cfg)
    runner.train()

    landing, = landings
    target = 0.5 * runner.model.supernet_resource('macs')
    assert landing.target == pytest.approx(target)
    assert landing.before > 1.05 * target and landing.moves  # the search alone did not get there
    cost = float(runner.model.estimator.estimate('macs', hard=True))
    assert landing.landed and cost == landing.after and abs(cost / target - 1) <= 0.01
    last = max(glob.glob(osp.join(str(tmp_path), 'epoch_*.pth')))
    saved = torch.load(last, map_location='cpu', weights_only=False)
    ema_hook = next(h for h in runner.hooks if type(h).__name__ == 'EMAHook')
    ema = dict(ema_hook.ema_model.module.named_parameters())
    for name, param in runner.model.named_parameters():
        if name.endswith('dms_ratio'):
            assert torch.equal(saved['state_dict'][name], param), name
            assert torch.equal(ema[name], param), name
    log = open(glob.glob(osp.join(str(tmp_path), '*', '*.log'))[0]).read()
    assert 'DMS landing on the macs target' in log and 'within 1.0% of the target' in log
