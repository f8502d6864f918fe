# Copyright (c) mmdms contributors. All rights reserved.
"""tools/dist_train.sh runs the digits DMS search on 2 processes (gloo on CPU): afterwards both
ranks hold the same structure, importance and weights, bit for bit; also with a SyncBN
supernet (as mmyolo's configs use)."""
import os
import os.path as osp
import subprocess
import sys
import time

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TESTS = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join('configs', 'dms', 'demo', 'digits_search.py')


@pytest.mark.parametrize('norm', ['BN', 'SyncBN'])
def test_two_rank_search_stays_in_sync(tmp_path, norm):
    work = str(tmp_path / 'search')
    port = str(29500 + (os.getpid() + 500) % 1000)
    options = [
        # 96 images over 2 ranks at batch 16: 3 iterations per epoch on each rank (DefaultSampler
        # gives each rank other images); 2 epochs, the second searching width only
        'train_dataloader.dataset.indices=96', 'train_dataloader.batch_size=16',
        'val_dataloader.dataset.indices=40', 'train_cfg.max_epochs=2', 'train_cfg.val_interval=2',
        'custom_hooks.1.width_only_epochs=1', 'default_hooks.logger.interval=1',
        # each rank draws other random crops too
        'randomness.seed=0', 'randomness.diff_rank_seed=True',
        'default_hooks.rank_state_dump.type=rank_state_dump.RankStateDumpHook',
        f'model.architecture.backbone.norm_cfg.type={norm}',
    ]
    start = time.monotonic()
    env = dict(os.environ, PYTHON=sys.executable, PORT=port,
               PYTHONPATH=os.pathsep.join([TESTS, os.environ.get('PYTHONPATH', '')]))
    result = subprocess.run(['bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir', work,
                             '--cfg-options', *options], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - start
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    print(f'2-rank digits search ({norm}): {elapsed:.1f} s')

    r0, r1 = (torch.load(osp.join(work, f'rank{r}.pth'), map_location='cpu')
              for r in (0, 1))
    assert r0['world_size'] == r1['world_size'] == 2
    # DMS replaced the BatchNorm layers by its ops; SyncBN ones became BatchNorm for DDP on CPU
    # (mmdms.compat; torch has no CPU SyncBN), as mmengine's Runner does for one process
    assert r0['norm_types'] == {'BN': ['DMSBatchNorm2d'], 'SyncBN': ['_BatchNormXd']}[norm]
    assert r0['iter'] == r1['iter'] == 6 and r0['epoch'] == r1['epoch'] == 2
    s0, s1 = r0['state_dict'], r1['state_dict']
    assert s0.keys() == s1.keys()
    different = sorted(k for k in s0 if not torch.equal(s0[k], s1[k]))
    # mmengine wraps the model with broadcast_buffers=False: BatchNorm running statistics are
    # each rank's own (they differ because the ranks saw other data); everything else is shared
    assert different and all(k.endswith(('running_mean', 'running_var')) for k in different), \
        different
    dms = [k for k in s0 if k.endswith(('dms_ratio', 'importance', 'frozen_mask'))]
    assert len(dms) == 3 * 4 + 2 * 20  # 4 depth stages (+ frozen_mask) and 20 widths
    assert all(s0[k].abs().sum() > 0 for k in dms if k.endswith('importance'))
    # the width-only epoch froze the same depth on both ranks
    assert r0['frozen'] == r1['frozen'] == [True] * 4
    assert all((s0[k] >= 0).all() for k in dms if k.endswith('frozen_mask'))
