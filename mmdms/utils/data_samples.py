# Copyright (c) mmdms contributors. All rights reserved.
"""The data samples an OpenMMLab model's ``tensor`` mode reads, when none are given.

mmdms runs a model's ``tensor`` mode on a bare input batch in several places: the resource
estimator's counting forward, the export's output check, ``count_macs`` and the static model's
forward. A classifier's or a one-stage detector's tensor mode reads no data samples; a detector
whose network forward depends on the image geometry does: mmdet's DETR family builds its padding
masks from each sample's ``img_shape`` and ``batch_input_shape`` (it asserts that samples are
given), a two-stage detector's RPN turns its maps into proposals inside the image's
``img_shape``. :func:`tensor_mode_data_samples` gives such a model, whatever its family, one
sample per image with the geometry of the input batch itself (no padding, no rescaling);
:func:`tensor_forward` is the ``tensor`` mode with them (``count_macs``'s).
"""
from typing import Any, List, Optional

import torch
import torch.nn as nn


def _detector_types() -> tuple:
    try:
        from mmdet.models.detectors import BaseDetector
    except ImportError:  # mmdet is not installed: no detector to serve
        return ()
    return (BaseDetector, )


def tensor_mode_data_samples(model: nn.Module, inputs: Any) -> Optional[List]:
    """Data samples for ``model(inputs, samples, mode='tensor')``, or None when the model
    needs none.

    Args:
        model (nn.Module): the architecture (or a DMS algorithm around it: its
            ``architecture`` is looked at).
        inputs: the input batch, ``(N, C, H, W)``.

    Returns:
        list | None: for an mmdet detector (mmyolo's are mmdet's), one ``DetDataSample`` per
        image whose ``img_shape``, ``ori_shape``, ``pad_shape`` and ``batch_input_shape`` are
        ``(H, W)`` and ``scale_factor`` is ``(1, 1)``; None for any other model.
    """
    model = getattr(model, 'architecture', model)
    types = _detector_types()
    if not types or not isinstance(model, types) or not isinstance(inputs, torch.Tensor) \
            or inputs.dim() != 4:
        return None
    from mmdet.structures import DetDataSample
    shape = tuple(int(s) for s in inputs.shape[-2:])
    meta = dict(img_shape=shape, ori_shape=shape, pad_shape=shape, batch_input_shape=shape,
                scale_factor=(1.0, 1.0))
    return [DetDataSample(metainfo=dict(meta)) for _ in range(inputs.shape[0])]


def tensor_forward(model: nn.Module, inputs: Any) -> Any:
    """``model``'s tensor mode on a bare batch: an algorithm wrapping an ``architecture`` (DMS,
    DMSSubnet) as its own tensor mode decides without data samples (a family's network
    forward: :mod:`mmdms.models.adapters.network_forward`); any other model with
    :func:`tensor_mode_data_samples`."""
    if isinstance(getattr(model, 'architecture', None), nn.Module):
        return model(inputs, mode='tensor')
    data_samples = tensor_mode_data_samples(model, inputs)
    if data_samples is None:  # a model whose forward may not take them
        return model(inputs, mode='tensor')
    return model(inputs, data_samples, mode='tensor')
