# Copyright (c) mmdms contributors. All rights reserved.
"""tools/dist_train.sh runs a tiny Llama DMS search on 2 processes (gloo on CPU): afterwards
both ranks hold the same structure, importance and weights, bit for bit."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

pytest.importorskip('transformers')

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TESTS = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join('configs', 'dms', 'demo', 'tiny_llama_search.py')


def test_two_rank_llm_search_stays_in_sync(tmp_path):
    work = str(tmp_path / 'search')
    port = str(29500 + (os.getpid() + 700) % 1000)
    data = dict(data_root=REPO, pattern='README.md', block_size=16, val_fraction=0.1)
    options = [
        # a 2-layer GQA Llama over 16-byte blocks of the README (every checkout has it);
        # 4 iterations of batch 4 per rank (InfiniteSampler gives each rank other blocks), the
        # last one matching widths to the target
        'model.architecture.config.hidden_size=32', 'model.architecture.config.num_hidden_layers=2',
        'model.architecture.config.intermediate_size=48',
        'model.mutator.parse_cfg.demo_input=(1,16)',
        *(f'{loader}.dataset.{k}={v}' for loader in ('train_dataloader', 'val_dataloader')
          for k, v in data.items()),
        'train_dataloader.batch_size=4', 'val_dataloader.dataset.max_files=1',
        'train_cfg.max_iters=4', 'train_cfg.val_interval=4',
        'custom_hooks.1.width_only_iters=1', 'custom_hooks.1.save_structure=False',
        'default_hooks.logger.interval=1',
        'randomness.seed=0', 'randomness.diff_rank_seed=True',
        'default_hooks.rank_state_dump.type=rank_state_dump.RankStateDumpHook',
    ]
    env = dict(os.environ, PYTHON=sys.executable, PORT=port,
               PYTHONPATH=os.pathsep.join([TESTS, os.environ.get('PYTHONPATH', '')]))
    result = subprocess.run(['bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir', work,
                             '--cfg-options', *options], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])

    r0, r1 = (torch.load(osp.join(work, f'rank{r}.pth'), map_location='cpu')
              for r in (0, 1))
    assert r0['world_size'] == r1['world_size'] == 2
    assert r0['iter'] == r1['iter'] == 4
    s0, s1 = r0['state_dict'], r1['state_dict']
    assert s0.keys() == s1.keys()
    # no BatchNorm here: every weight, ratio and importance is shared
    assert [k for k in s0 if not torch.equal(s0[k], s1[k])] == []
    dms = [k for k in s0 if k.endswith(('dms_ratio', 'importance'))]
    assert len(dms) == 2 * 2 * 2  # heads and FFN of 2 layers, each a ratio and an importance
    assert all(s0[k].abs().sum() > 0 for k in dms)  # the search moved, on both ranks alike
