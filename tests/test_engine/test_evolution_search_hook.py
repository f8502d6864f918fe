# Copyright (c) mmdms contributors. All rights reserved.
"""The one-shot + evolution baseline end to end, as tools/train.py runs it: a (tiny) one-shot
supernet trains on Fashion-MNIST-format files, EvolutionSearchHook leaves the best structure in
the last checkpoint, and export_subnet turns that checkpoint into a static subnet whose MACs are
the budget's (within 2%) as mmengine's FlopAnalyzer counts them. One training serves two
budgets: the second's structure is written beside the first's and exports at its budget."""
import json
import os.path as osp

import pytest
from mmengine.runner import Runner
from oneshot_test_utils import tiny_evolution_config

from mmdms.apis import export_subnet, initialized_subnet, load_config
from mmdms.engine.hooks import EvolutionSearchHook
from mmdms.structures import SubnetError
from mmdms.structures import load_subnet
from mmdms.utils import count_macs

from dms_test_utils import load_script

converter_test = load_script('tests', 'test_tools', 'test_fashion_mnist_converter.py')


def test_train_search_export(tmp_path):
    converter_test.write_tiny_dataset(str(tmp_path), train=40, test=10)
    root = str(tmp_path / 'root')
    converter_test.converter.convert(str(tmp_path), root, check_shapes=False)
    cfg = tiny_evolution_config()
    cfg.train_dataloader.batch_size = 10
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = root
    cfg.train_dataloader.dataset.subset = 20  # 2 images per class; the next 2 are held out
    hook = cfg.custom_hooks[0]
    assert hook.type == 'EvolutionSearchHook'
    hook.held_out_dataloader.dataset.update(data_root=root, subset=20, skip_per_class=2)
    hook.update(target_ratio=[0.5, 0.3], population_size=4, generations=2, num_parents=2,
                num_mutation=2, calib_batches=1)
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint.interval = 1
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    runner.train()

    with open(osp.join(cfg.work_dir, 'evolution.json')) as f:
        found = json.load(f)
    with open(osp.join(cfg.work_dir, 'evolution_0.5.json')) as f:
        assert json.load(f) == found  # the first budget's, also under its own name
    with open(osp.join(cfg.work_dir, 'evolution_0.3.json')) as f:
        second = json.load(f)
    assert abs(second['cost'] / second['target'] - 1) <= 0.02
    assert second['target'] < found['target']
    assert found['evaluated'] >= 4 and 0 <= found['score'] <= 100
    assert abs(found['cost'] / found['target'] - 1) <= 0.02
    config = str(tmp_path / 'evolution.py')
    cfg.dump(config)
    subnet = export_subnet(config, osp.join(cfg.work_dir, 'epoch_1.pth'),
                           str(tmp_path / 'subnet'), reinit=True)
    assert subnet['macs'] == found['cost']  # the structure the search left set
    assert abs(subnet['macs'] / (0.5 * subnet['supernet']['macs']) - 1) <= 0.02
    static = initialized_subnet(load_config(config), load_subnet(subnet['files']['subnet.json']))
    assert count_macs(static, (1, 1, 28, 28)) == subnet['macs']
    exported = load_subnet(subnet['files']['subnet.json'])
    for name, kept in found['structure'].items():
        kind, key = name.split(':', 1)
        if kind == 'width':
            assert exported['widths'][key]['indices'] == list(range(kept))  # the first ones

    # the second budget: exported from the same checkpoint with its structure file
    second_file = osp.join(cfg.work_dir, 'evolution_0.3.json')
    subnet = export_subnet(config, osp.join(cfg.work_dir, 'epoch_1.pth'),
                           str(tmp_path / 'subnet_0.3'), reinit=True, structure=second_file)
    assert subnet['macs'] == second['cost']
    assert abs(subnet['macs'] / (0.3 * subnet['supernet']['macs']) - 1) <= 0.02
    assert load_subnet(subnet['files']['subnet.json'])['source']['structure'] == second_file

    # a structure of another space: one clear error, nothing written
    wrong = str(tmp_path / 'wrong.json')
    with open(wrong, 'w') as f:
        json.dump(dict(structure={'width:nowhere': 3}), f)
    with pytest.raises(SubnetError, match='not a structure of this search space'):
        export_subnet(config, osp.join(cfg.work_dir, 'epoch_1.pth'), str(tmp_path / 'bad'),
                      structure=wrong)
    assert not osp.exists(tmp_path / 'bad')


@pytest.mark.parametrize('ratio', [0.0, 1.5, [], [0.5, -1]])
def test_bad_target_ratio(ratio):
    with pytest.raises(ValueError, match='target_ratio must be in'):
        EvolutionSearchHook(target_ratio=ratio, held_out_dataloader=dict())
