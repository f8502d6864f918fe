# Copyright (c) mmdms contributors. All rights reserved.
"""LocalFashionMNIST: reads the files of its split from data_root, never downloads, and says how
to install the data when it is absent; a class-balanced subset."""

import pytest

from mmdms.datasets import LocalFashionMNIST

from dms_test_utils import load_script

converter_test = load_script('tests', 'test_tools', 'test_fashion_mnist_converter.py')


@pytest.fixture
def data_root(tmp_path):
    arrays = converter_test.write_tiny_dataset(str(tmp_path), train=40, test=10)
    converter_test.converter.convert(str(tmp_path), str(tmp_path / 'root'), check_shapes=False)
    return str(tmp_path / 'root'), arrays


def test_each_split_reads_its_own_files(data_root):
    root, arrays = data_root
    for split, prefix in (('train', 'train'), ('test', 't10k')):
        dataset = LocalFashionMNIST(data_root=root, split=split)
        images = arrays[f'{prefix}-images-idx3-ubyte.gz']
        assert len(dataset) == len(images)
        item = dataset.get_data_info(3)
        assert (item['img'] == images[3]).all()
        assert int(item['gt_label']) == arrays[f'{prefix}-labels-idx1-ubyte.gz'][3]
    # test_mode alone does not switch the files (mmpretrain's MNIST picks them by test_mode)
    assert len(LocalFashionMNIST(data_root=root, split='test', test_mode=False)) == 10


def test_a_subset_keeps_the_first_images_of_every_class(data_root):
    root, arrays = data_root
    dataset = LocalFashionMNIST(data_root=root, split='train', subset=20)
    labels = [int(dataset.get_data_info(i)['gt_label']) for i in range(len(dataset))]
    assert sorted(labels) == sorted(list(range(10)) * 2)  # labels are i % 10: images 0..19
    assert (dataset.get_data_info(19)['img'] == arrays['train-images-idx3-ubyte.gz'][19]).all()
    with pytest.raises(ValueError, match='too large'):
        LocalFashionMNIST(data_root=root, split='train', subset=50)
    with pytest.raises(ValueError, match='multiple of 10'):
        LocalFashionMNIST(data_root=root, split='train', subset=15)


def test_absent_data_stops_with_the_install_command(tmp_path):
    with pytest.raises(FileNotFoundError, match='apt-get install -y dataset-fashion-mnist'):
        LocalFashionMNIST(data_root=str(tmp_path), split='train')
    with pytest.raises(ValueError, match='never downloads'):
        LocalFashionMNIST(data_root=str(tmp_path), download=True)
    with pytest.raises(ValueError, match="'train' or 'test'"):
        LocalFashionMNIST(data_root=str(tmp_path), split='val')


def test_skip_per_class_gives_a_held_out_split_disjoint_from_the_subset(data_root):
    root, arrays = data_root  # 40 training images, labels i % 10: 4 per class
    train = LocalFashionMNIST(data_root=root, split='train', subset=20)
    held_out = LocalFashionMNIST(data_root=root, split='train', subset=20, skip_per_class=2)
    images = arrays['train-images-idx3-ubyte.gz']

    def indices(dataset):
        return {next(j for j in range(len(images)) if (images[j] == dataset.get_data_info(i)[
            'img']).all()) for i in range(len(dataset))}

    assert indices(train) == set(range(20))
    assert indices(held_out) == set(range(20, 40))
    with pytest.raises(ValueError, match='after skipping 3 per class'):
        LocalFashionMNIST(data_root=root, split='train', subset=20, skip_per_class=3)
    with pytest.raises(ValueError, match='needs a subset'):
        LocalFashionMNIST(data_root=root, split='train', skip_per_class=2)
