# Copyright (c) mmdms contributors. All rights reserved.
"""The Eq. 10 target schedule: decays from the supernet's cost to the final target, then holds."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdms.ops import decay_progress, resource_target_at

costs = st.floats(1e-3, 1e12, allow_nan=False, allow_infinity=False)
ratios = st.floats(1e-6, 1.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(costs, ratios, st.integers(1, 300), st.integers(0, 20))
def test_decays_monotonically_to_final_then_holds(r_supernet, ratio, decay_steps, extra):
    r_final = ratio * r_supernet
    if r_final <= 0:  # underflow of a tiny product
        return
    targets = [resource_target_at(s, decay_steps, r_supernet, r_final)
               for s in range(decay_steps + extra)]
    assert targets[0] <= r_supernet
    assert all(b <= a for a, b in zip(targets, targets[1:])), 'not non-increasing'
    assert all(r_final <= t <= r_supernet for t in targets)
    assert targets[decay_steps - 1] == r_final  # exactly, at the end of the decay
    assert targets[decay_steps - 1:] == [r_final] * (extra + 1)  # constant afterwards


@settings(max_examples=100, deadline=None)
@given(costs, st.floats(1e-6, 0.999, allow_nan=False), st.integers(2, 300))
def test_is_eq10(r_supernet, ratio, decay_steps):
    r_final = ratio * r_supernet
    for step in (0, decay_steps // 2, decay_steps - 2):
        expected = (r_final / r_supernet)**((step + 1) / decay_steps) * r_supernet
        assert resource_target_at(step, decay_steps, r_supernet, r_final) == \
            pytest.approx(expected, rel=1e-12)
    # the first step has already decayed (e counts from 1), unless nothing is to decay
    assert resource_target_at(0, decay_steps, r_supernet, r_final) < r_supernet


def test_progress_rule():
    assert [decay_progress(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert decay_progress(0, 1) == 1.0


@pytest.mark.parametrize('args, message', [
    ((0, 0, 100.0, 50.0), 'at least 1 step'),
    ((-1, 4, 100.0, 50.0), 'counts from 0'),
    ((0, 4, 100.0, 150.0), 'r_final <= r_supernet'),
    ((0, 4, 100.0, 0.0), '0 < r_final'),
])
def test_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        resource_target_at(*args)
