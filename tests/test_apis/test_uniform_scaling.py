# Copyright (c) mmdms contributors. All rights reserved.
"""Uniform scaling, the baseline DMS is judged against, lands on any budget of a real search
space: the Fashion-MNIST MobileNetV2-style supernet, whose blocks are large steps of its MACs."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mmengine.config import Config

from mmdms.apis import build_search_model, load_config
from mmdms.apis.uniform_scaling import uniform_structure
from oneshot_test_utils import REPO


@pytest.fixture(scope='module')
def search():
    return build_search_model(load_config(Config.fromfile(
        f'{REPO}/configs/dms/fmnist/mbv2_search.py')))


def _fractions(mutables):
    return [m.num_kept / m.num_elements for m in mutables]


@pytest.mark.parametrize('scale_depth', [False, True])
def test_half_the_macs_is_met(search, scale_depth):
    """At half the MACs one fraction of widths and blocks jumps over the 2% band."""
    full = search.estimator.estimate('macs', full=True).item()
    cost = uniform_structure(search, 0.5 * full, scale_depth=scale_depth)
    assert abs(cost / (0.5 * full) - 1) <= 0.02
    assert cost == search.estimator.estimate('macs', hard=True).item()
    depths = _fractions(search.space.depth_mutables())
    assert (min(depths) < 1) == scale_depth


@settings(max_examples=10, deadline=None)
@given(ratio=st.floats(0.3, 0.9))
def test_any_budget_is_met_with_a_common_width_fraction(search, ratio):
    full = search.estimator.estimate('macs', full=True).item()
    cost = uniform_structure(search, ratio * full, scale_depth=True)
    assert abs(cost / (ratio * full) - 1) <= 0.02
    widths = _fractions(search.space.width_mutables())
    assert max(widths) - min(widths) <= 0.25  # one fraction, rounded per width
