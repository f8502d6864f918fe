# Copyright (c) mmdms contributors. All rights reserved.
"""The one-shot + evolution baseline end to end, as tools/train.py runs it: a (tiny) one-shot
supernet trains on Fashion-MNIST-format files, EvolutionSearchHook leaves the best structure in
the last checkpoint, and export_subnet turns that checkpoint into a static subnet whose MACs are
the budget's (within 2%) as mmengine's FlopAnalyzer counts them."""
import importlib.util
import json
import os.path as osp

from mmengine.runner import Runner
from oneshot_test_utils import REPO, tiny_evolution_config

from mmdms.apis import export_subnet, initialized_subnet, load_config
from mmdms.structures import load_subnet
from mmdms.utils import count_macs

spec = importlib.util.spec_from_file_location(
    'converter_test', osp.join(REPO, 'tests', 'test_tools', 'test_fashion_mnist_converter.py'))
converter_test = importlib.util.module_from_spec(spec)
spec.loader.exec_module(converter_test)


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
    hook.update(target_ratio=0.5, population_size=4, generations=2, num_parents=2,
                num_mutation=2, calib_batches=1)
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint.interval = 1
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    runner.train()

    with open(osp.join(cfg.work_dir, 'evolution.json')) as f:
        found = json.load(f)
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
