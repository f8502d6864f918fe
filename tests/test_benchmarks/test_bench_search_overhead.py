# Copyright (c) mmdms contributors. All rights reserved.
"""``benchmarks/bench_search_overhead.py --census``: the operator census counts every aten call
and the elements the call writes; a view writes none."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dms_test_utils import load_script

bench = load_script('benchmarks', 'bench_search_overhead.py')


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 9), k=st.integers(1, 9), m=st.integers(1, 9))
def test_census_counts_calls_and_written_elements(n, k, m):
    a, b, c = torch.randn(n, k), torch.randn(k, m), torch.randn(n * m)
    with bench.OpCensus() as counted:
        (a @ b).view(-1).mul(c).sum()
    assert dict(counted.calls) == {'aten.mm.default': 1, 'aten.view.default': 1,
                                   'aten.mul.Tensor': 1, 'aten.sum.default': 1}
    assert dict(counted.elements) == {'aten.mm.default': n * m, 'aten.mul.Tensor': n * m,
                                      'aten.sum.default': 1}
