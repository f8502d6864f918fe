# Copyright (c) mmdms contributors. All rights reserved.
"""export_subnet on the digits search model: the files, --reinit, --force, a checkpoint of
another config, and nothing half-written on failure."""
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config

import mmdms.apis.export as export_module
from dms_test_utils import build_search_model, randomize_structure
from mmdms.apis import CheckpointMismatchError, export_subnet, retrain_config
from mmdms.structures import load_subnet

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DIGITS = osp.join(REPO, 'configs', 'dms', 'demo', 'digits_search.py')


@pytest.fixture(scope='module')
def search_checkpoint(tmp_path_factory):
    model = randomize_structure(build_search_model(DIGITS), seed=2)
    path = str(tmp_path_factory.mktemp('search') / 'search.pth')
    torch.save(dict(meta=dict(dataset_meta=dict(classes=list('0123456789'))),
                    state_dict=model.state_dict()), path)
    return path, model


def test_export_writes_subnet_checkpoint_and_config(search_checkpoint, tmp_path):
    path, search = search_checkpoint
    work_dir = str(tmp_path / 'subnet')
    result = export_subnet(DIGITS, path, work_dir)
    assert sorted(os.listdir(work_dir)) == ['config.py', 'pruned.pth', 'subnet.json']
    assert os.listdir(tmp_path) == ['subnet']  # no temporary directory left

    subnet = load_subnet(osp.join(work_dir, 'subnet.json'))
    assert subnet['macs'] == result['macs'] == round(search.estimator.macs(hard=True).item())
    assert subnet['input_shape'] == [1, 3, 16, 16]
    assert result['max_rel_output_diff'] <= 1e-4
    stage = subnet['stages']['backbone.layer1.0-1']
    assert stage['kept_blocks'] == search.mutator.stage_mutables[
        'backbone__layer1__0-1'].kept_blocks()
    unit = search.mutator.mutable_units[0]
    assert subnet['widths'][unit.name]['indices'] == sorted(
        unit.mutable_channel.kept_channel_indices())
    assert 'MACs' in result['table'] and 'params' in result['table']

    ckpt = torch.load(osp.join(work_dir, 'pruned.pth'), map_location='cpu')
    assert ckpt['meta']['dataset_meta']['classes'][0] == '0'
    assert sum(v.numel() for k, v in ckpt['state_dict'].items()
               if 'running' not in k and 'num_batches' not in k) == subnet['params']

    cfg = Config.fromfile(osp.join(work_dir, 'config.py'))
    assert cfg.model.type == 'DMSSubnet' and cfg.model.subnet == osp.join(work_dir,
                                                                          'subnet.json')
    assert cfg.load_from == osp.join(work_dir, 'pruned.pth')
    # the search hooks are gone; the NaN guard and the random state keep serving the retraining
    assert cfg.custom_hooks == [dict(type='DMSNaNGuardHook'), dict(type='RandomStateHook')]
    assert 'mutator' not in cfg
    assert cfg.train_dataloader.dataset.type == 'DigitsDataset' and cfg.max_epochs == 12


def test_existing_work_dir_needs_force_and_reinit_loads_nothing(search_checkpoint, tmp_path):
    path, _ = search_checkpoint
    work_dir = tmp_path / 'subnet'
    work_dir.mkdir()
    (work_dir / 'keep.txt').write_text('mine')
    with pytest.raises(FileExistsError, match='--force'):
        export_subnet(DIGITS, path, str(work_dir))
    assert os.listdir(work_dir) == ['keep.txt']

    export_subnet(DIGITS, path, str(work_dir), force=True, reinit=True)
    assert sorted(os.listdir(work_dir)) == ['config.py', 'pruned.pth', 'subnet.json']
    assert Config.fromfile(str(work_dir / 'config.py')).load_from is None
    assert sorted(os.listdir(tmp_path)) == ['subnet']


def test_checkpoint_of_another_config_is_one_clear_error(tmp_path):
    architecture = Config.fromfile(DIGITS).model.architecture
    architecture.head.num_classes = 5
    other = build_search_model(DIGITS, architecture=architecture)
    path = str(tmp_path / 'other.pth')
    torch.save(dict(state_dict=other.state_dict()), path)
    with pytest.raises(CheckpointMismatchError) as error:
        export_subnet(DIGITS, path, str(tmp_path / 'subnet'))
    message = str(error.value)
    assert 'another config' in message and 'digits_search.py' in message
    assert 'architecture.head.fc.weight (5, 128) vs (10, 128)' in message
    assert not osp.exists(tmp_path / 'subnet')

    plain = {k.replace('architecture.', ''): v for k, v in other.state_dict().items()
             if k.startswith('architecture.')}
    torch.save(dict(state_dict=plain), path)
    with pytest.raises(CheckpointMismatchError, match=r'missing keys \(\d+\): architecture\.'):
        export_subnet(DIGITS, path, str(tmp_path / 'subnet'))


def test_a_failure_while_writing_leaves_nothing(search_checkpoint, tmp_path, monkeypatch):
    path, _ = search_checkpoint

    def broken(*args, **kwargs):
        raise RuntimeError('disk full')

    monkeypatch.setattr(export_module, 'retrain_config', broken)
    with pytest.raises(RuntimeError, match='disk full'):
        export_subnet(DIGITS, path, str(tmp_path / 'subnet'))
    assert os.listdir(tmp_path) == []


def test_retrain_config_drops_the_search_pieces():
    cfg = Config.fromfile(DIGITS)
    cfg.custom_hooks = [dict(type='DMSImportanceHook'), dict(type='ResourceLossHook'),
                        dict(type='EMAHook')]
    cfg.optim_wrapper.paramwise_cfg = dict(custom_keys={
        'dms_ratio': dict(lr_mult=0.1), 'backbone': dict(lr_mult=0.5)})
    cfg.model.architecture.backbone.init_cfg = dict(type='Pretrained', checkpoint='x.pth')
    out = retrain_config(cfg)
    assert out.custom_hooks == [dict(type='EMAHook')]
    assert out.optim_wrapper.paramwise_cfg.custom_keys == dict(backbone=dict(lr_mult=0.5))
    assert 'init_cfg' not in out.model.architecture.backbone
    assert out.model.subnet == '{{ fileDirname }}/subnet.json'
    assert out.param_scheduler == cfg.param_scheduler and out.val_evaluator == cfg.val_evaluator
    assert cfg.custom_hooks[0] == dict(type='DMSImportanceHook')  # the input is left alone
