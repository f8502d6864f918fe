# Copyright (c) mmdms contributors. All rights reserved.
"""export_subnet on the digits search model: the files, --reinit, --force, a checkpoint of
another config, and nothing half-written on failure."""
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

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
    stage = subnet['stages']['backbone.layer1.0-2']
    assert stage['kept_blocks'] == search.mutator.stage_mutables[
        'backbone__layer1__0-2'].kept_blocks()
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
    assert cfg.train_dataloader.dataset.type == 'DigitsDataset' and cfg.max_epochs == 10
    assert cfg.custom_imports.imports == ['mmdms']
    cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)  # as the Runner does
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    model.load_state_dict(ckpt['state_dict'])  # strict: pruned.pth is this model's


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


@pytest.mark.parametrize('name', ['resnet50', 'effnet_b0', 'mobilenet_v2', 'deit_tiny',
                                  'yolov8_n'])
def test_family_retrain_config_dumps_and_reloads(name, tmp_path):
    from mmdms.apis import load_config
    cfg = load_config(osp.join(REPO, 'configs', 'dms', f'{name}.py'))
    path = str(tmp_path / 'config.py')
    retrain_config(cfg).dump(path)
    out = Config.fromfile(path)
    assert out.model.type == 'DMSSubnet' and out.model.architecture == cfg.model.architecture
    assert out.model.subnet == str(tmp_path / 'subnet.json')
    assert out.load_from == str(tmp_path / 'pruned.pth')
    assert all(h['type'] != 'DMSImportanceHook' for h in out.custom_hooks)
    assert out.train_cfg == cfg.train_cfg and out.train_dataloader == cfg.train_dataloader


def test_yolov8_exports_and_its_retrain_config_loads_pruned_pth(tmp_path):
    """export_subnet on a random YOLOv8 structure (64 px); configs/dms/yolov8_n_retrain.py,
    pointed at the subnet.json with --cfg-options, builds the model pruned.pth loads into."""
    from mmdms.apis import build_search_model as build
    from mmdms.apis import load_config
    config = osp.join(REPO, 'configs', 'dms', 'yolov8_n.py')
    size = {'model.mutator.parse_cfg.demo_input': (1, 3, 64, 64)}
    search = randomize_structure(build(load_config(config, size)), seed=3)
    path = str(tmp_path / 'search.pth')
    torch.save(dict(state_dict=search.state_dict()), path)
    result = export_subnet(config, path, str(tmp_path / 'subnet'), cfg_options=size)
    assert result['max_rel_output_diff'] <= 1e-4 and result['input_shape'] == [1, 3, 64, 64]
    subnet = load_subnet(result['files']['subnet.json'])
    assert subnet['macs'] < subnet['supernet']['macs']

    retrain = Config.fromfile(osp.join(REPO, 'configs', 'dms', 'yolov8_n_retrain.py'))
    retrain.merge_from_dict({'model.subnet': result['files']['subnet.json']})
    assert retrain.default_scope == 'mmyolo'
    assert [h['type'] for h in retrain.custom_hooks] == ['EMAHook', 'mmdet.PipelineSwitchHook']
    with DefaultScope.overwrite_default_scope(retrain.default_scope):
        model = MODELS.build(retrain.model)
    ckpt = torch.load(result['files']['pruned.pth'], map_location='cpu')
    model.load_state_dict(ckpt['state_dict'])  # strict
