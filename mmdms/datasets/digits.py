# Copyright (c) mmdms contributors. All rights reserved.
"""scikit-learn's handwritten digits as an mmpretrain dataset (offline default data)."""
from typing import List, Optional, Sequence

import numpy as np
from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS

#: Number of images in the validation split (20% of 1,797, stratified by class).
NUM_VAL = 360
#: Seed of the stratified split; fixed so every run and rank sees the same split.
SPLIT_SEED = 0


def digits_split_indices(split: str) -> np.ndarray:
    """Indices into ``sklearn.datasets.load_digits()`` for ``split``.

    The split is stratified by class and seeded with :data:`SPLIT_SEED`: 1,437 training and
    360 validation images, the same on every machine. ``'test'`` is the validation split.

    Args:
        split (str): ``'train'``, ``'val'`` or ``'test'``.

    Returns:
        np.ndarray: sorted indices of the split's images.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ('train', 'val', 'test'):
        raise ValueError(f"DigitsDataset split must be 'train', 'val' or 'test', got {split!r}")
    labels = load_digits().target
    train, val = train_test_split(
        np.arange(len(labels)), test_size=NUM_VAL, stratify=labels, random_state=SPLIT_SEED)
    return np.sort(train if split == 'train' else val)


@DATASETS.register_module()
class DigitsDataset(BaseDataset):
    """The 1,797 real 8x8 grey handwritten digits that ship inside scikit-learn.

    Nothing is downloaded. Pixel values 0..16 are scaled to ``uint8`` 0..255 and, with
    ``channels=3``, repeated so that standard 3-channel classifiers consume them. Each item is a
    dict with ``img`` (H, W, C) ``uint8`` and ``gt_label``, as mmpretrain's ``PackInputs``, resize
    transforms and ``Accuracy`` expect.

    Args:
        split (str): ``'train'`` (1,437 images), ``'val'`` or ``'test'`` (the same 360 images).
            Stratified and seeded, see :func:`digits_split_indices`.
        channels (int): 1 or 3 image channels. Defaults to 3.
        pipeline (Sequence): transforms applied to each item.
        **kwargs: other arguments of :class:`mmpretrain.datasets.BaseDataset`.
    """

    METAINFO = {'classes': tuple(str(i) for i in range(10))}

    def __init__(self,
                 split: str = 'train',
                 channels: int = 3,
                 pipeline: Sequence = (),
                 test_mode: Optional[bool] = None,
                 **kwargs) -> None:
        if channels not in (1, 3):
            raise ValueError(f'DigitsDataset channels must be 1 or 3, got {channels}')
        self.split = split
        self.channels = channels
        digits_split_indices(split)  # fail early on a bad split name
        if test_mode is None:
            test_mode = split != 'train'
        super().__init__(ann_file='', pipeline=pipeline, test_mode=test_mode, **kwargs)

    def load_data_list(self) -> List[dict]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        data_list = []
        for idx in digits_split_indices(self.split):
            img = np.round(digits.images[idx] * (255.0 / 16.0)).astype(np.uint8)[..., None]
            if self.channels == 3:
                img = np.repeat(img, 3, axis=2)
            data_list.append(dict(img=img, gt_label=int(digits.target[idx]), sample_idx=int(idx)))
        return data_list

    def extra_repr(self) -> List[str]:
        return [f'Split: \t{self.split}', f'Channels: \t{self.channels}',
                'Source: \tsklearn.datasets.load_digits (offline)']
