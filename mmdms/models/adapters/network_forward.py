# Copyright (c) mmdms contributors. All rights reserved.
"""The network forward mmdms runs on a bare input batch: a model's ``tensor`` mode without data
samples.

The resource estimator counts it, the export's output check compares the static model's with
the hard-masked search model's, ``count_macs`` counts the static model's (through
:class:`~mmdms.models.algorithms.DMSSubnet`'s tensor mode). It is the architecture's own tensor
mode, given the data samples a detector reads (:func:`mmdms.utils.tensor_mode_data_samples`),
unless the model's family adapter provides a
:meth:`~mmdms.models.adapters.FamilyAdapter.tensor_forward`: a model whose tensor mode depends on
the data (a two-stage detector's RoI head runs on the proposals an NMS left) gets a
data-independent one, with the same layers, so that every count and check sees the same work.
"""
from typing import Any, List, Optional

import torch.nn as nn

from mmdms.utils.data_samples import tensor_mode_data_samples
from .base import adapter_for


def network_forward(architecture: nn.Module, inputs: Any,
                    data_samples: Optional[List] = None) -> Any:
    """``architecture``'s tensor mode on ``inputs``; without ``data_samples``, mmdms's network
    forward (see the module docstring)."""
    if data_samples is not None:
        return architecture(inputs, data_samples, mode='tensor')
    samples = tensor_mode_data_samples(architecture, inputs)
    adapter = adapter_for(architecture, 'tensor_forward')
    if adapter is not None:
        return adapter.tensor_forward(architecture, inputs, samples)
    if samples is None:  # a model whose forward may not take them
        return architecture(inputs, mode='tensor')
    return architecture(inputs, samples, mode='tensor')
