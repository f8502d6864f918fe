# Copyright (c) mmdms contributors. All rights reserved.
"""A search to a latency target in ms, end to end, under a fake deterministic timer: the latency
model is fitted and corrected to the (fake) measured supernet, the exported subnet states its
predicted latency and meets the target within 10%. No wall clock is read (speed is measured in
benchmarks/bench_latency_target.py)."""
import glob
import json
import os.path as osp

import pytest
from mmengine.runner import Runner

from dms_test_utils import MacsTimer, digits_search_config
from mmdms.apis import build_architecture, export_subnet
from mmdms.engine import ResourceLossHook
from mmdms.models import DMSSubnet

INPUT = (1, 3, 16, 16)


def latency_search(work_dir, timer, target_fraction=0.6, epochs=3):
    cfg = digits_search_config(work_dir, epochs=epochs, width_only=1, samples=64)
    # 12 iterations in all: the structure learns 4x faster than the demo's
    cfg.optim_wrapper.paramwise_cfg.custom_keys.dms_ratio.lr_mult *= 4
    supernet_ms = timer.measure(build_architecture(cfg), INPUT)
    target = target_fraction * supernet_ms
    for hook in cfg.custom_hooks:
        if hook['type'] == 'ResourceLossHook':
            hook.update(resource='latency', target=f'{target:.6f}ms', target_ratio=None,
                        latency_fit=dict(fractions=(0.5, 1.0)))
    runner = Runner.from_cfg(cfg)
    hook = next(h for h in runner.hooks if isinstance(h, ResourceLossHook))
    hook.latency_fit['timer'] = timer  # a callable cannot live in a dumped config
    return cfg, runner, supernet_ms, float(f'{target:.6f}')


def test_search_meets_a_latency_target_and_exports_its_latency(tmp_path):
    timer = MacsTimer(whole_per_layer=0.05)  # time outside the layers: scaling and per call
    cfg, runner, supernet_ms, target = latency_search(str(tmp_path / 'search'), timer)
    runner.train()
    model = runner.model
    fit = model.estimator.latency_model
    # the correction: the estimator's supernet latency is the measured (fake) one
    assert fit.correction == 'per_layer' and fit.supernet_ms == pytest.approx(supernet_ms)
    assert model.supernet_resource('latency') == pytest.approx(supernet_ms, rel=1e-5)
    assert (fit.scale, fit.per_layer_ms) == pytest.approx((timer.unexplained, 0.05), rel=1e-3)

    hard = model.estimator.estimate('latency', hard=True).item()
    assert abs(hard / target - 1) <= 0.10, (hard, target, supernet_ms)
    r_c = runner.message_hub.get_scalar('train/r_c').current()  # logged in ms
    assert r_c == pytest.approx(hard, rel=0.05)

    checkpoint = sorted(glob.glob(osp.join(str(tmp_path / 'search'), 'epoch_*.pth')))[-1]
    out = export_subnet(cfg, checkpoint, str(tmp_path / 'export'))
    with open(out['files']['subnet.json']) as f:
        subnet = json.load(f)
    assert subnet['latency_ms'] == pytest.approx(hard, rel=1e-5)
    assert subnet['supernet']['latency_ms'] == pytest.approx(supernet_ms, rel=1e-5)
    assert subnet['latency_model']['supernet_measured_ms'] == pytest.approx(supernet_ms)
    assert 'latency (ms)' in out['table']
    # and the exported static model "measures" what was predicted
    static = DMSSubnet(build_architecture(cfg), subnet)
    measured = timer.measure(static, INPUT)
    assert measured == pytest.approx(subnet['latency_ms'], rel=1e-4)
    assert abs(measured / target - 1) <= 0.10


def test_resumed_search_keeps_its_latency_model_and_load_from_times_anew():
    from types import SimpleNamespace

    from mmdms.models.task_modules import LATENCY_META_KEY, LatencyModel
    saved = LatencyModel([(0.5, None)], scale=2.0, correction='scale', supernet_ms=1.0)
    hook = ResourceLossHook(resource='latency', target='1ms')
    for resume, expected in ((False, None), (True, 2.0)):
        model = SimpleNamespace(estimator=SimpleNamespace(latency_model=None))
        runner = SimpleNamespace(model=model, _resume=resume)
        hook.after_load_checkpoint(runner, dict(meta={LATENCY_META_KEY: saved.to_dict()}))
        fitted = model.estimator.latency_model
        assert (None if fitted is None else fitted.scale) == expected
    checkpoint = dict(meta={})
    hook.before_save_checkpoint(runner, checkpoint)
    assert LatencyModel.from_dict(checkpoint['meta'][LATENCY_META_KEY]).supernet_ms == 1.0
