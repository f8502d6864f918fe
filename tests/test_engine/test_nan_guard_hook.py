# Copyright (c) mmdms contributors. All rights reserved.
"""DMSNaNGuardHook: a NaN loss stops the search with one clear message, keeps the last good
checkpoint, and stops every data-parallel rank at the same iteration."""
import os
import os.path as osp
import time
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as torch_dist
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.runner import Runner

from dms_test_utils import digits_search_config, spawn_ranks
from mmdms.engine import DMSNaNGuardHook, NonFiniteLossError
from mmdms.utils import release_process_group


class PoisonWeights(Hook):
    """Puts a NaN into the classifier's weights before iteration ``at`` (0-based)."""

    def __init__(self, at):
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at:
            with torch.no_grad():
                runner.model.architecture.head.fc.weight[0, 0] = float('nan')


def test_nan_loss_stops_the_search_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = digits_search_config(str(tmp_path), epochs=2, width_only=1)  # 4 iterations per epoch
    assert [h['type'] for h in cfg.custom_hooks][-2:] == ['DMSNaNGuardHook', 'RandomStateHook']
    # a checkpoint after every iteration: the one of the NaN iteration must not be written
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1, by_epoch=False)
    cfg.experiment_name = 'nan_guard'
    runner = Runner.from_cfg(cfg)
    runner.register_hook(PoisonWeights(at=5))
    with pytest.raises(NonFiniteLossError) as error:
        runner.train()
    message = str(error.value)
    assert message.count('\n') == 2  # one message: where and what, the checkpoint, the causes
    assert 'epoch 2, iteration 2 of 4 (iteration 6 of the run)' in message
    assert 'loss=nan' in message and 'loss_resource=' in message and 'r_t=' in message
    assert 'lr_structure, now 0.005' in message and 'lambda_resource, now 1.0' in message
    last_good = osp.join(str(tmp_path), 'iter_5.pth')
    assert f'The last good checkpoint is {last_good}' in message
    assert f'--resume {last_good}' in message

    saved = sorted(f for f in os.listdir(tmp_path) if f.endswith('.pth'))
    assert saved == [f'iter_{i}.pth' for i in range(1, 6)]
    with open(osp.join(str(tmp_path), 'last_checkpoint')) as f:
        assert f.read().strip() == last_good
    state = torch.load(last_good, map_location='cpu')['state_dict']
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    # the guard ran before the importance update: the NaN gradients never reached it
    assert all(torch.isfinite(m.importance).all() for m in runner.model.dms_mutables())


def fake_runner(**info):
    hub = MessageHub(f'nan_guard_{time.monotonic_ns()}')
    for key, value in info.items():
        hub.update_info(key, value)
    return SimpleNamespace(message_hub=hub, epoch=0, iter=3, model=torch.nn.Linear(1, 1),
                           train_dataloader=[None] * 10)


def test_a_checkpoint_with_non_finite_weights_is_refused():
    hook = DMSNaNGuardHook()
    runner = fake_runner(last_ckpt='/work/epoch_3.pth')
    good = dict(state_dict=dict(w=torch.ones(2), steps=torch.tensor(3)))
    hook.before_save_checkpoint(runner, good)
    bad = dict(state_dict=dict(w=torch.ones(2), bn=torch.tensor([1.0, float('inf')])))
    with pytest.raises(NonFiniteLossError, match=r'refusing to save .* non-finite values in '
                       r'bn\. The last good checkpoint is /work/epoch_3\.pth'):
        hook.before_save_checkpoint(runner, bad)
    # a plain model (retraining an exported subnet): the causes do not mention DMS settings
    with pytest.raises(NonFiniteLossError, match='a learning rate too large') as error:
        hook.after_train_iter(fake_runner(), 3, outputs=dict(loss=torch.tensor(float('inf'))))
    assert 'iteration 4 of 10' in str(error.value) and 'No checkpoint was saved' in str(
        error.value)
    hook.after_train_iter(runner, 3, outputs=dict(loss=torch.tensor(2.0), acc=torch.ones(())))


def _guard_on_rank(rank: int, out_dir: str) -> None:
    torch_dist.init_process_group('gloo', init_method=f'file://{out_dir}/rendezvous', rank=rank,
                                  world_size=2)
    loss = float('nan') if rank == 1 else 0.5  # only rank 1 sees the NaN
    try:
        DMSNaNGuardHook().after_train_iter(fake_runner(), 0, outputs=dict(loss=torch.tensor(loss)))
        result = 'continued'
    except NonFiniteLossError as e:
        result = str(e)
    with open(osp.join(out_dir, f'rank{rank}.txt'), 'w') as f:
        f.write(result)
    release_process_group()


def test_every_rank_stops_at_the_same_iteration(tmp_path):
    spawn_ranks(_guard_on_rank, args=(str(tmp_path), ))
    for rank in (0, 1):
        message = (tmp_path / f'rank{rank}.txt').read_text()
        assert 'on rank(s) [1]' in message, (rank, message)
