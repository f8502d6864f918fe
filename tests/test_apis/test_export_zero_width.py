# Copyright (c) mmdms contributors. All rights reserved.
"""Ratios pushed past their range never empty a layer: at least min_width channels and
min_blocks blocks stay, in the masks, in the cost and in the exported subnet."""
import copy
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmpretrain.structures import DataSample

from dms_test_utils import build_search_model, randomize_structure
from mmdms.apis import export_subnet
from mmdms.models.utils import sync_importance
from mmdms.structures import load_subnet

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DIGITS = osp.join(REPO, 'configs', 'dms', 'demo', 'digits_search.py')
MIN_WIDTH = 4


def model_with_min_width():
    mutator = copy.deepcopy(Config.fromfile(DIGITS).model.mutator)
    mutator.channel_unit_cfg.default_args.min_width = MIN_WIDTH
    return randomize_structure(build_search_model(DIGITS, mutator=mutator), seed=3)


def assert_minimal_structure(model):
    for mutable in model.mutator.width_mutables:
        assert mutable.hard_mask.sum() >= MIN_WIDTH and mutable.num_kept == mutable.min_elements
        assert torch.isfinite(mutable.soft_mask).all() and mutable.soft_mask.sum() > 0
    for mutable in model.mutator.depth_mutables:
        assert mutable.num_kept == mutable.min_elements
    assert model.estimator.estimate('macs', hard=True).item() > 0


def test_ratio_beyond_its_range_keeps_the_minimum_and_exports(tmp_path):
    model = model_with_min_width()
    with torch.no_grad():
        for mutable in model.dms_mutables():
            mutable.dms_ratio.fill_(float('inf'))
    assert_minimal_structure(model)
    with torch.no_grad():
        for mutable in model.dms_mutables():
            mutable.dms_ratio.fill_(5.0)  # as a checkpoint edited by hand might hold
    assert_minimal_structure(model)
    path = str(tmp_path / 'search.pth')
    torch.save(dict(state_dict=model.state_dict()), path)

    result = export_subnet(DIGITS, path, str(tmp_path / 'subnet'), cfg_options={
        'model.mutator.channel_unit_cfg.default_args.min_width': MIN_WIDTH})
    subnet = load_subnet(result['files']['subnet.json'])
    for name, layer in subnet['layers'].items():
        for key in ('kept_in', 'kept_out'):  # None: every channel kept
            assert layer[key] is None or len(layer[key]) >= 1, (name, key)
    for key, width in subnet['widths'].items():
        assert MIN_WIDTH <= width['kept'] == len(width['indices']), key
    state = torch.load(result['files']['pruned.pth'], map_location='cpu')['state_dict']
    assert all(v.numel() > 0 for v in state.values()), [k for k, v in state.items()
                                                         if v.numel() == 0]
    assert result['max_rel_output_diff'] <= 1e-4


def test_a_diverged_checkpoint_is_refused_by_name(tmp_path):
    """A NaN ratio would prune every channel of its group (c' >= NaN is never true)."""
    model = build_search_model(DIGITS)
    key = 'mutator.units.3.mutable_channel.dms_ratio'
    with torch.no_grad():
        model.state_dict(keep_vars=True)[key].fill_(float('nan'))
    path = str(tmp_path / 'search.pth')
    torch.save(dict(state_dict=model.state_dict()), path)
    with pytest.raises(ValueError, match=rf'NaN or infinite values in {re.escape(key)}: the '
                       'search diverged'):
        export_subnet(DIGITS, path, str(tmp_path / 'subnet'))
    assert not osp.exists(tmp_path / 'subnet')


def test_a_resource_loss_driving_every_ratio_up_stops_at_the_minimum():
    model = model_with_min_width()
    # an absurd resource weight and structure learning rate: every ratio runs past its maximum
    model.set_resource_constraint('macs', 1.0, lambda_resource=1e4)
    optim_wrapper = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.05),
                                                    paramwise_cfg=dict(custom_keys={
                                                        'dms_ratio': dict(lr_mult=100.0)})))
    model.train()
    data = dict(inputs=list(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)),
                data_samples=[DataSample().set_gt_label(i) for i in range(4)])
    for _ in range(3):
        log = model.train_step(data, optim_wrapper)
        assert all(torch.isfinite(v).all() for v in log.values())
        sync_importance(model.dms_mutables())  # projects the ratios back onto their range
    ratios = [(m.dms_ratio.item(), m.max_ratio) for m in model.dms_mutables()]
    assert all(0 <= ratio <= top + 1e-6 for ratio, top in ratios), ratios  # float32 ratio
    at_max = sum(ratio == pytest.approx(top) for ratio, top in ratios)
    assert at_max >= len(ratios) // 2, ratios
    for mutable in model.mutator.width_mutables:
        assert mutable.hard_mask.sum() >= MIN_WIDTH
    for mutable in model.mutator.depth_mutables:
        assert mutable.num_kept >= mutable.min_elements
    assert model.estimator.estimate('macs', hard=True).item() > 0
