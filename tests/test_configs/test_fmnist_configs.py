# Copyright (c) mmdms contributors. All rights reserved.
"""configs/dms/fmnist/: the two Fashion-MNIST supernets (28x28 grey) search widths and depths,
their MACs as FlopAnalyzer counts them, and the data come from local files only."""
import os.path as osp

import pytest
from mmengine.config import Config

from mmdms.apis import build_architecture, build_search_model, load_config
from mmdms.utils import count_macs

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FMNIST = osp.join(REPO, 'configs', 'dms', 'fmnist')
# supernet -> width groups, blocks of each depth-searched stage, MACs (per 1x28x28 image)
EXPECTED = {
    # ResNet_CIFAR, stages of 3, 4, 6 BasicBlocks: the first of each downsamples; a residual
    # group per stage and one per block; plus the stem
    'resnet': (1 + 3 + 13, [2, 3, 5], 13225792),
    # stem, the first stage's block, then per stage of 3 inverted residuals a residual group and
    # 3 expansions; the last conv
    'mbv2': (1 + 1 + 3 * 4 + 1, [2, 2, 2], 4266032),
}


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_the_supernet_searches_widths_and_depths(name):
    widths, stages, macs = EXPECTED[name]
    cfg = load_config(osp.join(FMNIST, f'{name}_search.py'))
    search = build_search_model(cfg)
    assert len(search.space.widths) == widths
    assert [len(s.blocks) for s in search.space.stages.values()] == stages
    assert search.space.weight_coverage == 1.0
    assert search.estimator.estimate('macs', hard=True).item() == macs
    assert count_macs(build_architecture(cfg), (1, 1, 28, 28)) == macs


@pytest.mark.parametrize('kind', ['supernet', 'search', 'retrain'])
def test_the_data_are_local_fashion_mnist(kind):
    for name in EXPECTED:
        cfg = Config.fromfile(osp.join(FMNIST, f'{name}_{kind}.py'))
        for loader in (cfg.train_dataloader, cfg.val_dataloader):
            assert loader.dataset.type == 'LocalFashionMNIST'  # never downloads
        assert cfg.val_dataloader.dataset.split == 'test'
        assert cfg.train_dataloader.dataset.subset == 10000


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_the_evolution_config_scores_on_held_out_training_images(name):
    cfg = Config.fromfile(osp.join(FMNIST, f'{name}_evolution.py'))
    assert cfg.model.type == 'OneShotDMS'
    held_out = cfg.custom_hooks[0].held_out_dataloader.dataset
    train = cfg.train_dataloader.dataset
    assert (held_out.split, train.split) == ('train', 'train')
    assert held_out.skip_per_class == train.subset // 10  # after the training images
    assert held_out.subset and held_out.data_root == train.data_root
