# Copyright (c) mmdms contributors. All rights reserved.
"""tools/train.py, tools/test.py and tools/dist_train.sh on the digits demo config (short runs)."""
import glob
import json
import os
import os.path as osp
import subprocess
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'demo', 'digits_resnet.py')
# A few iterations: 64 training images, batch 16, 40 validation images.
SHORT = ['train_dataloader.batch_size=16', 'train_dataloader.dataset.indices=64',
         'val_dataloader.dataset.indices=40', 'default_hooks.logger.interval=1']


def run(cmd, **env):
    result = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, **env), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return result.stdout + result.stderr


def last_log(work_dir):
    logs = sorted(glob.glob(osp.join(work_dir, '*', '*.log')))
    with open(logs[-1]) as f:
        return f.read()


def test_train_resume_and_test(tmp_path):
    work = str(tmp_path / 'train')
    run([sys.executable, 'tools/train.py', CONFIG, '--work-dir', work, '--cfg-options',
         'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', *SHORT])
    assert osp.exists(osp.join(work, 'epoch_1.pth'))
    # resume loads mmengine's message hub from the checkpoint (weights_only loading on torch 2.13)
    run([sys.executable, 'tools/train.py', CONFIG, '--work-dir', work, '--resume',
         '--cfg-options', 'train_cfg.max_epochs=2', 'train_cfg.val_interval=1', *SHORT])
    assert 'resumed epoch: 1' in last_log(work)
    assert osp.exists(osp.join(work, 'epoch_2.pth'))
    out = str(tmp_path / 'metrics.json')
    run([sys.executable, 'tools/test.py', CONFIG, osp.join(work, 'epoch_2.pth'), '--work-dir',
         str(tmp_path / 'test'), '--out', out, '--cfg-options', 'test_dataloader.dataset.indices=40'])
    with open(out) as f:
        assert 0.0 <= json.load(f)['accuracy/top1'] <= 100.0


def test_dist_train_two_processes_on_cpu(tmp_path):
    work = str(tmp_path / 'dist')
    port = str(29500 + os.getpid() % 1000)
    run(['bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir', work, '--cfg-options',
         'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', *SHORT],
        PYTHON=sys.executable, PORT=port)
    log = last_log(work)
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    # 64 images over 2 ranks at batch 16: 2 iterations per epoch on each rank
    assert 'Epoch(train) [1][2/2]' in log
    assert 'accuracy/top1' in log
    assert osp.exists(osp.join(work, 'epoch_1.pth'))
