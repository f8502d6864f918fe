# Copyright (c) mmdms contributors. All rights reserved.
"""The compiled soft count: the same value and gradients as counting layer by layer."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdms.models.layer_rules import BatchNormRule
from mmdms.models.task_modules.cost_polynomial import NotPolynomial, Polynomial

from test_resource_estimator import DepthwiseModel, prepare, randomize, small_vit

NUM_SYMBOLS = 3


def expressions():
    """Expression trees over symbols 0..2 and small numbers, as nested tuples."""
    leaves = st.one_of(st.tuples(st.just('sym'), st.integers(0, NUM_SYMBOLS - 1)),
                       st.tuples(st.just('num'), st.integers(-5, 5)))

    def extend(children):
        return st.one_of(
            st.tuples(st.sampled_from(['+', '-', '*']), children, children),
            st.tuples(st.just('/'), children, st.integers(1, 7)),
            st.tuples(st.just('**'), children, st.integers(0, 3)))

    return st.recursive(leaves, extend, max_leaves=8)


def evaluate(tree, symbols):
    op = tree[0]
    if op == 'sym':
        return symbols[tree[1]]
    if op == 'num':
        return tree[1]
    if op == '/':
        return evaluate(tree[1], symbols) / tree[2]
    if op == '**':
        return evaluate(tree[1], symbols) ** tree[2]
    left, right = evaluate(tree[1], symbols), evaluate(tree[2], symbols)
    return left + right if op == '+' else left - right if op == '-' else left * right


@settings(max_examples=60, deadline=None)
@given(expressions(), st.lists(st.floats(0.5, 3.0), min_size=NUM_SYMBOLS,
                               max_size=NUM_SYMBOLS))
def test_polynomial_arithmetic_equals_the_numbers(tree, values):
    polynomial = Polynomial._lift(evaluate(tree, [Polynomial.symbol(i)
                                                  for i in range(NUM_SYMBOLS)]))
    from_terms = sum(c * math.prod(values[s] for s in m) for m, c in polynomial.terms.items())
    assert from_terms == pytest.approx(evaluate(tree, values), rel=1e-9, abs=1e-9)


def test_a_width_used_as_a_number_is_not_a_polynomial():
    width = Polynomial.symbol(0)
    for use in (lambda: 2 / width, lambda: width / width, lambda: width ** 0.5,
                lambda: bool(width), lambda: float(width), lambda: width * torch.ones(())):
        with pytest.raises(NotPolynomial):
            use()


def soft_counts(estimator, mutables, resource, compiled):
    """``(r_c, d r_c / d ratio of every mutable)`` through the compiled polynomial or layer by
    layer."""
    estimator._compiled.pop(resource, None)
    if not compiled:
        estimator._compiled[resource] = None
    r_c = estimator.estimate(resource)
    assert (estimator._compiled[resource] is not None) == compiled
    grads = torch.autograd.grad(r_c, [m.dms_ratio for m in mutables])
    return r_c.detach(), torch.stack(grads)


@pytest.mark.parametrize('build', [DepthwiseModel, small_vit])
@pytest.mark.parametrize('resource', ['macs', 'params'])
def test_compiled_count_equals_the_layer_by_layer_count(build, resource):
    torch.manual_seed(0)
    mutator, estimator = prepare(build(), 16)
    mutables = mutator.dms_mutables()
    randomize(mutables, torch.Generator().manual_seed(5))
    value, grads = soft_counts(estimator, mutables, resource, compiled=True)
    expected, expected_grads = soft_counts(estimator, mutables, resource, compiled=False)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(grads, expected_grads, rtol=1e-4, atol=1e-6 * grads.abs().max())
    assert grads.abs().sum() > 0


def test_a_cost_that_is_not_a_polynomial_is_counted_layer_by_layer(monkeypatch):
    torch.manual_seed(0)
    mutator, estimator = prepare(DepthwiseModel(), 16)
    randomize(mutator.dms_mutables(), torch.Generator().manual_seed(6))
    expected = estimator.macs().item()
    bn_macs = BatchNormRule.macs

    def rounded(self, call, widths):  # a rule that rounds its width: no polynomial
        return bn_macs(self, call, widths) + 0 * torch.as_tensor(widths[0]).round()

    monkeypatch.setattr(BatchNormRule, 'macs', rounded)
    estimator._compiled.clear()
    assert estimator.macs().item() == pytest.approx(expected, rel=1e-6)
    assert estimator._compiled['macs'] is None
