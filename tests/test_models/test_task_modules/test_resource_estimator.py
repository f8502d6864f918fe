# Copyright (c) mmdms contributors. All rights reserved.
"""DMSResourceEstimator counts like mmengine's FlopAnalyzer (on the digits search model)."""
import os.path as osp

import torch

from dms_test_utils import build_search_model, randomize_structure
from mmdms.utils import count_macs, count_params

REPO = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
DIGITS = osp.join(REPO, 'configs', 'dms', 'demo', 'digits_search.py')


def test_supernet_counts_equal_flop_analyzer_and_pooling_takes_its_consumers_mask():
    model = build_search_model(DIGITS)
    shape = model.estimator.input_shape
    # every mask ignored: the plain architecture, global average pooling included
    assert model.estimator.estimate('macs', full=True).item() == \
        count_macs(model.architecture, shape)
    assert model.estimator.estimate('params', full=True).item() == \
        count_params(model.architecture)

    pool, = [c for c in model.estimator.calls if c.kind == 'pool']
    assert pool.consumer == 'head.fc'  # reads a view of the pooled tensor
    stream = model.mutator.mutable_units[-2]  # the last stage's residual stream
    assert 'head.fc' in stream.layer_names()
    stream.mutable_channel.set_kept(5)
    assert model.estimator._call_macs(pool, hard=True).item() == 5 * pool.positions
    assert model.estimator._call_macs(pool, hard=False).item() == \
        stream.mutable_channel.soft_mask.sum().item() * pool.positions


def test_hard_counts_are_exact_integers():
    model = randomize_structure(build_search_model(DIGITS), seed=3)
    for resource in ('macs', 'params'):
        count = model.estimator.estimate(resource, hard=True)
        assert count.dtype == torch.float64 and count.item() == round(count.item())
