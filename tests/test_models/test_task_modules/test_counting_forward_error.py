# Copyright (c) mmdms contributors. All rights reserved.
"""The estimator's counting forward fails with one error saying where and why (mmdet's DETR gave
a bare ``AssertionError`` from its ``pre_transformer``)."""
import pytest
import torch.nn as nn
from mmengine.model import BaseModel

from mmdms.models.search_space import SearchSpace
from mmdms.models.task_modules import CountingForwardError, DMSResourceEstimator


class NeedsDataSamples(BaseModel):
    """A tensor mode that, like DETR's, asserts that data samples were given."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        assert data_samples is not None
        return self.conv(inputs)


def test_counting_forward_error_names_where_and_why():
    estimator = DMSResourceEstimator(input_shape=(1, 3, 8, 8))
    with pytest.raises(CountingForwardError) as info:
        estimator.prepare(NeedsDataSamples(), SearchSpace())
    message = str(info.value)
    assert 'NeedsDataSamples' in message and 'no data samples' in message
    assert 'AssertionError' in message and 'test_counting_forward_error.py' in message
    assert 'in forward' in message and '(1, 3, 8, 8)' in message
    assert isinstance(info.value.__cause__, AssertionError)
