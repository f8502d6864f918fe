# Copyright (c) mmdms contributors. All rights reserved.
"""Fashion-MNIST from local files only: mmpretrain's ``FashionMNIST`` that never downloads, says
how to install the data when it is absent, and can take a class-balanced training subset."""
import os.path as osp
from typing import List, Optional

import numpy as np
from mmpretrain.datasets import FashionMNIST
from mmpretrain.registry import DATASETS

#: Where ``tools/dataset_converters/fashion_mnist.py`` writes the files by default.
DEFAULT_DATA_ROOT = osp.join('data', 'fashion_mnist')
#: How to get them (Debian's package, then the converter).
INSTALL_HINT = ('apt-get install -y dataset-fashion-mnist && '
                'python tools/dataset_converters/fashion_mnist.py --dst {root} '
                '(or `make data-fmnist`)')


@DATASETS.register_module()
class LocalFashionMNIST(FashionMNIST):
    """Fashion-MNIST (70,000 real 28x28 grey images, 10 classes) read from ``data_root``.

    mmpretrain's :class:`~mmpretrain.datasets.FashionMNIST` downloads the data when it is
    missing and picks the files by ``test_mode``, not by ``split``; this one never downloads,
    stops with the install command when the files are absent, and reads the files of ``split``.
    Items are ``uint8`` HxW images with ``gt_label``, as mmpretrain's pipelines expect.

    Args:
        data_root (str): the directory holding the four uncompressed IDX files.
        split (str): ``'train'`` (60,000 images) or ``'test'`` (10,000).
        subset (int, optional): keep only this many images, the same number of each class
            (``subset`` must be a multiple of 10), the first ones of each class in file order:
            the same images on every machine and run.
        skip_per_class (int): skip the first ``skip_per_class`` images of each class before
            taking ``subset`` (default 0). With ``subset=S, skip_per_class=T/10`` it picks
            images disjoint from those of ``subset=T``: a held-out split of the training data
            (what ``EvolutionSearchHook`` scores candidates on).
        **kwargs: other arguments of :class:`mmpretrain.datasets.BaseDataset`; ``download``
            is refused.
    """

    def __init__(self,
                 data_root: str = DEFAULT_DATA_ROOT,
                 split: str = 'train',
                 subset: Optional[int] = None,
                 skip_per_class: int = 0,
                 test_mode: Optional[bool] = None,
                 **kwargs) -> None:
        if kwargs.pop('download', False):
            raise ValueError('LocalFashionMNIST never downloads; install the data with '
                             + INSTALL_HINT.format(root=data_root))
        if split not in ('train', 'test'):
            raise ValueError(f"LocalFashionMNIST split must be 'train' or 'test', got {split!r}")
        if subset is not None and (subset <= 0 or subset % len(self.METAINFO['classes'])):
            raise ValueError(f'LocalFashionMNIST subset must be a positive multiple of 10 (the '
                             f'same number of images per class), got {subset}')
        if skip_per_class < 0 or (skip_per_class and subset is None):
            raise ValueError(f'LocalFashionMNIST skip_per_class must be >= 0 and needs a subset '
                             f'(how many images to take after the skipped ones), got '
                             f'skip_per_class={skip_per_class}, subset={subset}')
        self.subset = subset
        self.skip_per_class = skip_per_class
        super().__init__(data_root=data_root, split=split, download=False,
                         test_mode=split == 'test' if test_mode is None else test_mode,
                         **kwargs)

    def load_data_list(self) -> List[dict]:
        if not self._check_exists():
            root = self.data_prefix['root']
            raise FileNotFoundError(
                f"Fashion-MNIST is not in '{root}' (it needs train-images-idx3-ubyte, "
                'train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte). '
                'Install it with: ' + INSTALL_HINT.format(root=root))
        # the base class reads the files of ``test_mode``; make it read those of ``split``
        test_mode, self.test_mode = self.test_mode, self.split == 'test'
        try:
            data = super().load_data_list()
        finally:
            self.test_mode = test_mode
        if self.subset is None:
            return data
        per_class = self.subset // len(self.METAINFO['classes'])
        labels = np.array([int(item['gt_label']) for item in data])
        skip = self.skip_per_class
        kept = np.sort(np.concatenate([np.flatnonzero(labels == c)[skip:skip + per_class]
                                       for c in range(len(self.METAINFO['classes']))]))
        if len(kept) != self.subset:
            raise ValueError(f'LocalFashionMNIST: the {self.split} split has fewer than '
                             f'{skip + per_class} images of some class; subset {self.subset} '
                             f'(after skipping {skip} per class) is too large')
        return [data[i] for i in kept]

    def extra_repr(self) -> List[str]:
        return super().extra_repr() + [f'Split: \t{self.split}',
                                       f'Subset: \t{self.subset or "all"}',
                                       f'Skipped per class: \t{self.skip_per_class}']
