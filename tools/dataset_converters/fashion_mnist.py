# Copyright (c) mmdms contributors. All rights reserved.
"""Put Fashion-MNIST where mmpretrain's ``FashionMNIST`` dataset reads it, without downloading.

Debian ships the four IDX files, gzipped: ``apt-get install -y dataset-fashion-mnist`` puts them
in ``/usr/share/datasets/fashion-mnist``. Debian's ``.gz`` files are not byte-identical to the
upstream ones (their MD5 differs from mmpretrain's table: recompressed), so this script checks
what they hold instead: IDX headers of unsigned bytes matching the file sizes, the published
shapes (60,000 and 10,000 images of 28x28) and as many labels as images. It writes them
gunzipped into ``--dst``
(``data/fashion_mnist`` by default, the ``data_root`` of ``configs/dms/fmnist/``), each file
renamed into place only when complete.

``python tools/dataset_converters/fashion_mnist.py [--src DIR] [--dst DIR] [--force]``
(``make data-fmnist``)
"""
import argparse
import gzip
import os
import os.path as osp
import shutil
import struct
import sys
from typing import Dict, Optional

SOURCE = '/usr/share/datasets/fashion-mnist'
DESTINATION = osp.join('data', 'fashion_mnist')
INSTALL = 'apt-get install -y dataset-fashion-mnist'
#: gzipped file -> the dimensions of the published data (the names mmpretrain's FashionMNIST
#: reads, without ``.gz``).
FILES = {
    'train-images-idx3-ubyte.gz': (60000, 28, 28),
    'train-labels-idx1-ubyte.gz': (60000, ),
    't10k-images-idx3-ubyte.gz': (10000, 28, 28),
    't10k-labels-idx1-ubyte.gz': (10000, ),
}
#: IDX magic numbers: unsigned bytes, 3 dimensions (images) or 1 (labels).
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801


class ConversionError(RuntimeError):
    """A missing, corrupt or inconsistent Fashion-MNIST file."""


def idx_header(path: str) -> tuple:
    """The dimensions an uncompressed IDX file of unsigned bytes declares, checked against its
    size.

    Raises:
        ConversionError: not an unsigned-byte IDX file, or its size does not match.
    """
    with open(path, 'rb') as f:
        head = f.read(4)
        if len(head) < 4:
            raise ConversionError(f"'{path}' is not an IDX file (shorter than its header)")
        magic, = struct.unpack('>I', head)
        if magic not in (IMAGES_MAGIC, LABELS_MAGIC):
            raise ConversionError(f"'{path}' is not an IDX file of unsigned bytes with 1 or 3 "
                                  f'dimensions (magic number {magic:#010x})')
        ndim = magic & 0xff
        dims = struct.unpack(f'>{ndim}I', f.read(4 * ndim))
    count = 1
    for dim in dims:
        count *= dim
    size = osp.getsize(path)
    if size != 4 + 4 * ndim + count:
        raise ConversionError(f"'{path}' declares {'x'.join(map(str, dims))} bytes of data but "
                              f'holds {size - 4 - 4 * ndim}: truncated or corrupt')
    return dims


def convert(src: str = SOURCE, dst: str = DESTINATION, check_shapes: bool = True,
            force: bool = False) -> Dict[str, tuple]:
    """Gunzip the four Fashion-MNIST IDX files of ``src`` into ``dst``, checked.

    Args:
        src (str): directory of the ``.gz`` files (the Debian package's by default).
        dst (str): the dataset's ``data_root``; created if needed.
        check_shapes (bool): require the published dimensions (:data:`FILES`); off for
            smaller files of the same format.
        force (bool): rewrite files that are already there.

    Returns:
        dict: each written (or already present) uncompressed file name -> its dimensions.

    Raises:
        ConversionError: a file is missing (the message gives the install command), is not
            IDX, is truncated, has other dimensions than the published data, or the images and
            labels of a split differ in number.
    """
    missing = [name for name in FILES if not osp.isfile(osp.join(src, name))]
    if missing:
        raise ConversionError(f"Fashion-MNIST not found in '{src}' (missing {', '.join(missing)})."
                              f' Install it with `{INSTALL}` (as root), or pass --src.')
    os.makedirs(dst, exist_ok=True)
    dims = {}
    for name, shape in FILES.items():
        source = osp.join(src, name)
        target = osp.join(dst, name[:-len('.gz')])
        if force or not osp.isfile(target):
            partial = target + '.partial'
            try:
                with gzip.open(source, 'rb') as fin, open(partial, 'wb') as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)
                idx_header(partial)
            except (OSError, ConversionError):
                if osp.exists(partial):
                    os.remove(partial)
                raise
            os.replace(partial, target)
        dims[osp.basename(target)] = idx_header(target)
        if check_shapes and dims[osp.basename(target)] != shape:
            raise ConversionError(f"'{source}' holds {dims[osp.basename(target)]}, not the "
                                  f'published {shape}; reinstall it with `{INSTALL}`')
    for split in ('train', 't10k'):
        images, labels = dims[f'{split}-images-idx3-ubyte'], dims[f'{split}-labels-idx1-ubyte']
        if len(images) != 3 or len(labels) != 1 or images[0] != labels[0]:
            raise ConversionError(f"Fashion-MNIST '{split}' split: images {images} and labels "
                                  f'{labels} do not match (N x H x W images, N labels)')
    return dims


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--src', default=SOURCE, help=f'the .gz files (default: {SOURCE})')
    parser.add_argument('--dst', default=DESTINATION,
                        help=f'the data_root to write (default: {DESTINATION})')
    parser.add_argument('--force', action='store_true', help='rewrite existing files')
    args = parser.parse_args(argv)
    try:
        dims = convert(args.src, args.dst, force=args.force)
    except ConversionError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    for name, shape in dims.items():
        print(f"{osp.join(args.dst, name)}: {' x '.join(map(str, shape))}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
