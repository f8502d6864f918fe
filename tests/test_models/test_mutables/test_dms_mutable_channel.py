# Copyright (c) mmdms contributors. All rights reserved.
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mmrazor.models.mutables import BaseMutableChannel
from mmrazor.registry import MODELS

from mmdms.models import DMSMutableChannel


def randomize_importance(mutable, seed=0):
    g = torch.Generator().manual_seed(seed)
    mutable.importance.copy_(torch.rand(mutable.num_elements, generator=g))


def test_registered_as_an_mmrazor_mutable_channel():
    mutable = MODELS.build(dict(_scope_='mmrazor', type='DMSMutableChannel', num_channels=16))
    assert isinstance(mutable, DMSMutableChannel) and isinstance(mutable, BaseMutableChannel)


def test_defaults_follow_the_paper():
    mutable = DMSMutableChannel(32)
    assert mutable.lambda_ == 32 and mutable.normalize
    assert torch.equal(mutable.importance, torch.zeros(32))
    assert float(mutable.dms_ratio) == 0.0 and mutable.current_choice == 32
    # zero importance: ties broken by index, so ranks are (N-1..0)/N and m = sigmoid(rank * N / N)
    expected = torch.sigmoid(torch.arange(31, -1, -1, dtype=torch.float32))
    assert torch.allclose(mutable.soft_mask, expected)
    assert mutable.current_mask.all()
    assert DMSMutableChannel(12, lambda_scale=4).lambda_ == 48  # attention heads


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 200), st.integers(1, 16), st.floats(0, 1), st.integers(0, 1000))
def test_step_groups_share_importance_and_mask(n, step, a, seed):
    mutable = DMSMutableChannel(n, step=step)
    groups = -(-n // step)
    assert mutable.num_elements == groups and mutable.importance.shape == (groups, )
    randomize_importance(mutable, seed)
    with torch.no_grad():
        mutable.dms_ratio.fill_(a)
    soft, hard = mutable.soft_mask, mutable.hard_mask
    assert soft.shape == hard.shape == (n, )
    for g in range(groups):
        channels = mutable.group_channels(g)
        assert torch.all(soft[channels] == soft[channels[0]])
        assert torch.all(hard[channels] == hard[channels[0]])
    assert mutable.activated_channels == int(hard.sum())


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 200), st.integers(1, 8), st.data())
def test_min_width_respected_at_any_ratio(n, step, data):
    min_width = data.draw(st.integers(1, n))
    a = data.draw(st.floats(-5, 5))
    mutable = DMSMutableChannel(n, step=step, min_width=min_width)
    randomize_importance(mutable)
    with torch.no_grad():
        mutable.dms_ratio.fill_(a)
    assert mutable.activated_channels >= min_width
    mutable.project_ratio()
    assert 0.0 <= float(mutable.dms_ratio) <= mutable.max_ratio + 1e-7


def test_zero_width_is_refused():
    with pytest.raises(ValueError, match='min_width'):
        DMSMutableChannel(8, min_width=0)
    mutable = DMSMutableChannel(8, min_width=2)
    with pytest.raises(ValueError, match='cannot keep 1 of 8'):
        mutable.current_choice = 1


def test_choice_round_trip_and_export_order():
    mutable = DMSMutableChannel(6)
    mutable.importance.copy_(torch.tensor([0.1, 0.9, 0.3, 0.7, 0.2, 0.5]))
    mutable.current_choice = 3
    assert mutable.current_choice == 3
    assert mutable.kept_channel_indices() == [1, 3, 5]  # most important first
    chosen = mutable.dump_chosen()
    assert chosen.chosen == 3 and chosen.meta['kept_indices'] == [1, 3, 5]
    assert chosen.meta['max_channels'] == 6


def test_expected_width_is_differentiable():
    mutable = DMSMutableChannel(10)
    randomize_importance(mutable)
    width = mutable.expected_width()
    width.backward()
    m = mutable.element_soft_mask().detach()
    assert torch.allclose(mutable.dms_ratio.grad, (-10 * m * (1 - m)).sum())


def test_state_dict_restores_ratio_importance_and_masks():
    a = DMSMutableChannel(16, step=2)
    randomize_importance(a, seed=3)
    with torch.no_grad():
        a.dms_ratio.fill_(0.4)
    b = DMSMutableChannel(16, step=2)
    b.load_state_dict(a.state_dict())
    assert set(a.state_dict()) == {'dms_ratio', 'importance'}
    assert torch.equal(a.hard_mask, b.hard_mask) and torch.equal(a.soft_mask, b.soft_mask)


def test_without_normalisation_min_width_still_holds():
    """Table 12 ablation: raw importance all below the ratio must not empty the width."""
    mutable = DMSMutableChannel(8, min_width=3, normalize=False)
    with torch.no_grad():
        mutable.importance.copy_(torch.tensor([1e-8, 5e-8, 2e-8, 0., 3e-8, 1e-9, 0., 4e-8]))
        mutable.dms_ratio.fill_(0.5)
    assert mutable.hard_mask.tolist() == [0, 1, 0, 0, 1, 0, 0, 1]  # the 3 most important
    assert sorted(mutable.kept_channel_indices()) == [1, 4, 7]


def test_cached_hard_mask_follows_every_change_of_ratio_and_importance():
    """The ranks and the hard mask are cached between changes; each way of changing the ratio
    or the importance gives the mask of the new values."""
    mutable = DMSMutableChannel(8)
    randomize_importance(mutable)

    def fresh():
        from mmdms.ops import hard_mask, rank_normalize
        return hard_mask(rank_normalize(mutable.importance),
                         mutable.dms_ratio.detach().clamp(0, mutable.max_ratio))

    assert mutable.hard_mask is mutable.hard_mask  # cached
    optimizer = torch.optim.SGD([mutable.dms_ratio], lr=1.0)
    mutable.dms_ratio.grad = torch.tensor(-0.45)
    optimizer.step()  # in place, as every search step
    assert mutable.num_kept == 4 and torch.equal(mutable.hard_mask, fresh())
    mutable.apply_importance_statistic(torch.arange(8.0) * 100)  # importance update, in place
    assert torch.equal(mutable.hard_mask, fresh()) and mutable.kept_channel_indices()[0] == 7
    state = {k: v.clone() for k, v in mutable.state_dict().items()}
    mutable.set_kept(2)
    assert mutable.num_kept == 2
    mutable.load_state_dict(state)
    assert mutable.num_kept == 4 and torch.equal(mutable.hard_mask, fresh())
    mutable.importance = torch.rand(8)  # a new buffer
    assert torch.equal(mutable.hard_mask, fresh())
