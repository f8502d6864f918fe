# Copyright (c) mmdms contributors. All rights reserved.
"""SyncBN supernets (mmyolo's configs use SyncBN): DMS searches them in one CPU process, plain and
wrapped in DDP (a 1-process gloo group), and in a single-process Runner; the 2-process run is in
tests/test_tools/test_dist_search.py."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import build_optim_wrapper
from mmengine.runner import Runner
from mmpretrain.structures import DataSample

from dms_test_utils import build_search_model, digits_search_config
from mmdms.models.layer_rules import DMSSyncBatchNorm
from mmdms.utils import release_process_group

REPO = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
DIGITS = osp.join(REPO, 'configs', 'dms', 'demo', 'digits_search.py')


def syncbn_search_model():
    architecture = copy.deepcopy(Config.fromfile(DIGITS).model.architecture)
    architecture.backbone.norm_cfg = dict(type='SyncBN', requires_grad=True)
    torch.manual_seed(0)
    return build_search_model(DIGITS, architecture=architecture)


def test_syncbn_keeps_the_masks_on_the_convs():
    """A folded mask would run SyncBatchNorm as a local BatchNorm: no SyncBN layer folds, while
    the same supernet with BatchNorm folds conv2 of each of its 16 blocks and the 20 readers of
    its stem and of its residual streams (conv1 of each block, the downsample convs, the
    classifier)."""
    model = syncbn_search_model()
    assert model.mutator.folded_convs == []
    assert not any(getattr(m, 'fold_output_mask', False) for m in model.modules())
    torch.manual_seed(0)
    assert len(build_search_model(DIGITS).mutator.folded_convs) == 16 + 20


def search_steps(model, wrapper=None, steps=3):
    optim_wrapper = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.05)))
    model.set_resource_constraint('macs', 0.5 * model.supernet_resource('macs'))
    model.train()
    g = torch.Generator().manual_seed(0)
    data = dict(inputs=list(torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8,
                                          generator=g)),
                data_samples=[DataSample().set_gt_label(i % 10) for i in range(8)])
    costs = [model.estimator.estimate('macs').item()]
    for _ in range(steps):
        log = (wrapper or model).train_step(data, optim_wrapper)
        assert all(torch.isfinite(v).all() for v in log.values())
        for mutable in model.dms_mutables():
            mutable.update_importance()
        costs.append(model.estimator.estimate('macs').item())
    return costs


def batch_norms(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize('ddp', [False, True])
def test_syncbn_supernet_searches_in_one_cpu_process(tmp_path, ddp):
    model = syncbn_search_model()
    norms = batch_norms(model)
    assert norms and all(isinstance(m, DMSSyncBatchNorm) for m in norms)
    before = norms[0].running_mean.clone()
    wrapper = None
    if ddp:  # torch's DDP refuses SyncBatchNorm on CPU; mmdms.compat reverts it first
        torch.distributed.init_process_group('gloo', init_method=f'file://{tmp_path}/rdzv',
                                             rank=0, world_size=1)
    try:
        if ddp:
            wrapper = MMDistributedDataParallel(module=model)
            assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
            assert batch_norms(model)[0].running_mean is norms[0].running_mean
        costs = search_steps(model, wrapper)
    finally:
        del wrapper
        release_process_group()
    assert costs[-1] < costs[0]
    assert not torch.equal(norms[0].running_mean, before)  # statistics were tracked


def test_syncbn_search_config_runs_in_a_single_process_runner(tmp_path):
    """mmengine's Runner turns SyncBN into BatchNorm without a process group; the DMS search
    (resource loss, importance, checkpoint) is unaffected."""
    cfg = digits_search_config(str(tmp_path), epochs=2, width_only=1, samples=32)
    cfg.model.architecture.backbone.norm_cfg = dict(type='SyncBN', requires_grad=True)
    cfg.experiment_name = 'syncbn_single'
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 4 and runner.message_hub.get_scalar('train/r_c').current() < \
        runner.model.supernet_resource('macs') * 1e-6
    assert osp.exists(osp.join(str(tmp_path), 'epoch_2.pth'))
