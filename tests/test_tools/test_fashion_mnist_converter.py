# Copyright (c) mmdms contributors. All rights reserved.
"""tools/dataset_converters/fashion_mnist.py on tiny IDX files written here in the real format
(big-endian header, unsigned bytes, gzipped): what it writes, and its errors."""
import gzip
import os.path as osp
import struct

import numpy as np
import pytest

from dms_test_utils import load_script

converter = load_script('tools', 'dataset_converters', 'fashion_mnist.py')


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic 0x0000 08 <ndim>, the dimensions, the data."""
    header = struct.pack('>I', 0x0800 | array.ndim) + struct.pack(f'>{array.ndim}I', *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_tiny_dataset(src, train=30, test=10, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        'train-images-idx3-ubyte.gz': rng.integers(0, 256, (train, 28, 28)),
        'train-labels-idx1-ubyte.gz': np.arange(train) % 10,
        't10k-images-idx3-ubyte.gz': rng.integers(0, 256, (test, 28, 28)),
        't10k-labels-idx1-ubyte.gz': (np.arange(test) * 3) % 10,
    }
    for name, array in arrays.items():
        with gzip.open(osp.join(src, name), 'wb') as f:
            f.write(idx_bytes(array))
    return arrays


def test_it_writes_the_gunzipped_files_mmpretrain_reads(tmp_path):
    arrays = write_tiny_dataset(str(tmp_path))
    dst = tmp_path / 'out'
    dims = converter.convert(str(tmp_path), str(dst), check_shapes=False)
    assert dims == {'train-images-idx3-ubyte': (30, 28, 28), 'train-labels-idx1-ubyte': (30, ),
                    't10k-images-idx3-ubyte': (10, 28, 28), 't10k-labels-idx1-ubyte': (10, )}
    for name, array in arrays.items():
        assert (dst / name[:-3]).read_bytes() == idx_bytes(array)
    # mmpretrain's own reader reads them back
    import mmdms  # noqa: F401  (the compat shims before mmpretrain loads)
    from mmpretrain.datasets.mnist import read_image_file, read_label_file
    images = read_image_file(str(dst / 't10k-images-idx3-ubyte')).numpy()
    labels = read_label_file(str(dst / 't10k-labels-idx1-ubyte')).numpy()
    assert (images == arrays['t10k-images-idx3-ubyte.gz']).all()
    assert (labels == arrays['t10k-labels-idx1-ubyte.gz']).all()
    assert not list(dst.glob('*.partial'))


def test_the_published_shapes_are_required_by_default(tmp_path):
    write_tiny_dataset(str(tmp_path))
    with pytest.raises(converter.ConversionError, match=r'not the published \(60000, 28, 28\)'):
        converter.convert(str(tmp_path), str(tmp_path / 'out'))


def test_missing_files_give_the_install_command(tmp_path):
    with pytest.raises(converter.ConversionError,
                       match='apt-get install -y dataset-fashion-mnist'):
        converter.convert(str(tmp_path), str(tmp_path / 'out'))
    assert converter.main(['--src', str(tmp_path), '--dst', str(tmp_path / 'out')]) == 1


def test_a_truncated_file_is_refused_and_not_left_behind(tmp_path):
    write_tiny_dataset(str(tmp_path))
    data = gzip.open(tmp_path / 'train-images-idx3-ubyte.gz').read()
    with gzip.open(tmp_path / 'train-images-idx3-ubyte.gz', 'wb') as f:
        f.write(data[:-100])
    with pytest.raises(converter.ConversionError, match='truncated or corrupt'):
        converter.convert(str(tmp_path), str(tmp_path / 'out'), check_shapes=False)
    assert not (tmp_path / 'out' / 'train-images-idx3-ubyte').exists()
    assert not list((tmp_path / 'out').glob('*.partial'))


def test_images_and_labels_of_a_split_must_match(tmp_path):
    write_tiny_dataset(str(tmp_path))
    with gzip.open(tmp_path / 't10k-labels-idx1-ubyte.gz', 'wb') as f:
        f.write(idx_bytes(np.zeros(9)))
    with pytest.raises(converter.ConversionError, match="'t10k' split"):
        converter.convert(str(tmp_path), str(tmp_path / 'out'), check_shapes=False)
