# Copyright (c) mmdms contributors. All rights reserved.
import numpy as np
import pytest
import torch
from mmpretrain.registry import DATASETS

from mmdms.datasets import DigitsDataset, digits_split_indices


def test_split_sizes_are_disjoint_and_cover_the_data():
    train, val = digits_split_indices('train'), digits_split_indices('val')
    assert len(train) == 1437 and len(val) == 360
    assert not set(train) & set(val) and len(set(train) | set(val)) == 1797
    assert np.array_equal(digits_split_indices('test'), val)


def test_split_is_deterministic_and_stratified():
    from sklearn.datasets import load_digits
    labels = load_digits().target
    a, b = DigitsDataset(split='train'), DigitsDataset(split='train')
    assert [d['sample_idx'] for d in a.data_list] == [d['sample_idx'] for d in b.data_list]
    assert np.array_equal(a[5]['img'], b[5]['img'])
    val_counts = np.bincount(labels[digits_split_indices('val')], minlength=10)
    all_counts = np.bincount(labels, minlength=10)
    assert np.all(np.abs(val_counts - all_counts * 360 / 1797) <= 1)


def test_items_and_classes():
    ds = DATASETS.build(dict(type='DigitsDataset', split='val'))
    assert len(ds) == 360 and ds.CLASSES == tuple('0123456789')
    assert set(ds.get_gt_labels().tolist()) == set(range(10))
    item = ds[0]
    assert item['img'].shape == (8, 8, 3) and item['img'].dtype == np.uint8
    assert item['img'].max() <= 255 and np.array_equal(item['img'][..., 0], item['img'][..., 2])
    grey = DigitsDataset(split='val', channels=1)[0]['img']
    assert grey.shape == (8, 8, 1) and np.array_equal(grey[..., 0], item['img'][..., 0])
    assert ds.test_mode and not DigitsDataset(split='train').test_mode


def test_standard_mmpretrain_pipeline_and_evaluator():
    from mmengine.evaluator import Evaluator
    ds = DATASETS.build(dict(type='DigitsDataset', split='val', pipeline=[
        dict(type='Resize', scale=(16, 16)), dict(type='PackInputs')]))
    packed = ds[3]
    assert packed['inputs'].shape == (3, 16, 16)
    sample = packed['data_samples']
    assert int(sample.gt_label) == ds.get_gt_labels()[3]
    evaluator = Evaluator(dict(type='mmpretrain.Accuracy', topk=(1, )))
    sample.set_pred_score(torch.nn.functional.one_hot(sample.gt_label, 10).float()[0])
    evaluator.process([sample.to_dict()])
    assert evaluator.evaluate(1)['accuracy/top1'] == 100.0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="split must be 'train', 'val' or 'test'"):
        DigitsDataset(split='training')
    with pytest.raises(ValueError, match='channels must be 1 or 3'):
        DigitsDataset(channels=2)
