# Copyright (c) mmdms contributors. All rights reserved.
"""OneShotDMS: one optimiser step on the mean loss of the sandwich's hard structures, which
share the supernet's first channels and blocks; the ratios are not trained; a space ranked by
anything but the index is refused with the fix."""
import pytest
import torch
from mmengine.optim import OptimWrapper
from mmpretrain.structures import DataSample
from oneshot_test_utils import tiny_evolution_config

from mmdms.apis import build_search_model
from mmdms.models.space_structure import get_structure, sample_structure, set_structure


def batch(size=6):
    g = torch.Generator().manual_seed(0)
    return dict(inputs=[torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8, generator=g)
                        for _ in range(size)],
                data_samples=[DataSample().set_gt_label(i % 10) for i in range(size)])


def test_a_step_trains_the_shared_weights_on_the_sandwich():
    model = build_search_model(tiny_evolution_config(sandwich=('max', 'min', 'random')))
    largest = sample_structure(model, 'max')
    assert get_structure(model) == largest
    ratios = [m.dms_ratio.clone() for m in model.dms_mutables()]
    weights = {n: p.clone() for n, p in model.architecture.named_parameters()}
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    log = model.train_step(batch(), optim)
    assert set(log) == {'loss', 'loss_max0', 'loss_min1', 'loss_random2'}
    expected = (log['loss_max0'] + log['loss_min1'] + log['loss_random2']) / 3
    assert torch.allclose(log['loss'], expected)
    assert get_structure(model) == largest  # set back after the step
    assert all(torch.equal(r, m.dms_ratio) for r, m in zip(ratios, model.dms_mutables()))
    changed = [n for n, p in model.architecture.named_parameters()
               if not torch.equal(weights[n], p)]
    assert 'head.fc.weight' in changed and 'backbone.conv1.conv.weight' in changed

    # the smallest structure keeps the first quarter of the channels: those the larger ones
    # share
    assert model.min_width_fraction == 0.25
    set_structure(model, sample_structure(model, 'min', min_width_fraction=0.25))
    for mutable in model.space.width_mutables():
        kept = mutable.kept_channel_indices()
        assert sorted(kept) == list(range(-(-mutable.num_channels // 4)))


def test_a_ranked_space_is_refused_with_the_fix():
    cfg = tiny_evolution_config()
    cfg.model.mutator.channel_unit_cfg.default_args.importance = 'taylor'
    with pytest.raises(ValueError, match="importance='index'"):
        build_search_model(cfg)
    with pytest.raises(ValueError, match='sandwich'):
        build_search_model(tiny_evolution_config(sandwich=('largest', )))
