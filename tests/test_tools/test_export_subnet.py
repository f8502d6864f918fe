# Copyright (c) mmdms contributors. All rights reserved.
"""tools/export_subnet.py on a digits search checkpoint; tools/train.py and tools/test.py accept
the exported config."""
import json
import os
import os.path as osp
import runpy
import subprocess
import sys

import pytest
import torch

from dms_test_utils import build_search_model, randomize_structure
from mmdms.apis import export_subnet

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DIGITS = osp.join(REPO, 'configs', 'dms', 'demo', 'digits_search.py')
SHORT = ['train_dataloader.batch_size=16', 'train_dataloader.dataset.indices=64',
         'val_dataloader.dataset.indices=40', 'train_cfg.max_epochs=1',
         'train_cfg.val_interval=1']


@pytest.fixture(scope='module')
def search_checkpoint(tmp_path_factory):
    search = randomize_structure(build_search_model(DIGITS), seed=4)
    path = str(tmp_path_factory.mktemp('search') / 'search.pth')
    torch.save(dict(state_dict=search.state_dict()), path)
    return path


def run(*args):
    # PYTHONPATH: the tools import this checkout's mmdms, not another installed one
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS=str(torch.get_num_threads()))
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return result.stdout + result.stderr


def test_cli_exports_and_refuses_an_existing_dir(search_checkpoint, tmp_path, monkeypatch):
    work = str(tmp_path / 'subnet')
    out = run('tools/export_subnet.py', DIGITS, search_checkpoint, '--work-dir', work)
    assert 'supernet' in out and 'subnet/supernet' in out and f'wrote {work}' in out
    assert sorted(os.listdir(work)) == ['config.py', 'pruned.pth', 'subnet.json']

    monkeypatch.setattr(sys, 'argv', ['export_subnet.py', DIGITS, search_checkpoint,
                                      '--work-dir', work])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(osp.join(REPO, 'tools', 'export_subnet.py'), run_name='__main__')
    assert str(exit_.value).startswith('export_subnet.py: error:') and '--force' in str(
        exit_.value)


def test_train_and_test_accept_the_exported_config(search_checkpoint, tmp_path):
    work = str(tmp_path / 'subnet')
    export_subnet(DIGITS, search_checkpoint, work)
    config = osp.join(work, 'config.py')
    metrics = str(tmp_path / 'metrics.json')
    run('tools/test.py', config, osp.join(work, 'pruned.pth'), '--work-dir',
        str(tmp_path / 'test'), '--out', metrics, '--cfg-options',
        'test_dataloader.dataset.indices=40')
    with open(metrics) as f:
        assert 0.0 <= json.load(f)['accuracy/top1'] <= 100.0

    out = run('tools/train.py', config, '--work-dir', str(tmp_path / 'train'),
              '--cfg-options', *SHORT)
    assert f"Load checkpoint from {osp.join(work, 'pruned.pth')}" in out
    assert osp.exists(tmp_path / 'train' / 'epoch_1.pth')
