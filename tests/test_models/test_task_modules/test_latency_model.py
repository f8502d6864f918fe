# Copyright (c) mmdms contributors. All rights reserved.
"""Latency constraint (App. A.1.2): a fitted per-layer F, and a search that lowers latency."""
import statistics
import time

import pytest
import torch
import torch.nn as nn

from test_resource_estimator import prepare


class ThreeConvs(nn.Module):

    def __init__(self, widths=(48, 96, 96)):
        super().__init__()
        a, b, c = widths
        self.conv1 = nn.Conv2d(3, a, 3, padding=1)
        self.conv2 = nn.Conv2d(a, b, 3, padding=1)
        self.conv3 = nn.Conv2d(b, c, 3, padding=1)
        self.head = nn.Linear(c, 10)

    def forward(self, x):
        x = torch.relu(self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x))))))
        return self.head(x.mean(dim=(2, 3)))


def measured_ms(model, x, repeats=15):
    with torch.no_grad():
        for _ in range(3):
            model(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def test_latency_search_lowers_measured_latency():
    torch.manual_seed(0)
    model = ThreeConvs()
    # hardware-friendly widths: groups of 8 channels (the coarse-grained space, App. A.1.1)
    mutator, estimator = prepare(model, 32, channel_unit_cfg=dict(
        type='DMSChannelUnit', default_args=dict(step=8)))
    estimator.fit_latency(model, repeats=5)
    fitted = [(c.name, lat, coeffs) for c, (lat, coeffs) in
              zip(estimator.calls, estimator.latency_model.layers) if coeffs is not None]
    assert [name for name, _, _ in fitted] == ['conv1', 'conv2', 'conv3', 'head']
    for _, latency_max, coeffs in fitted:
        assert latency_max > 0 and torch.isfinite(coeffs).all()
    full = estimator.estimate('latency', full=True).item()
    assert full == pytest.approx(sum(lat * float(coeffs.sum()) for _, lat, coeffs in fitted))

    # search the structure alone under a latency target of 40% of the supernet's
    ratios = [m.dms_ratio for m in mutator.dms_mutables()]
    optimizer = torch.optim.Adam(ratios, lr=0.02)
    for _ in range(100):
        r_c = estimator.estimate('latency')
        if r_c.item() <= 0.4 * full:
            break
        optimizer.zero_grad()
        torch.log(r_c / (0.4 * full)).backward()
        optimizer.step()
        for m in mutator.dms_mutables():
            m.project_ratio()
    assert estimator.estimate('latency').item() <= 0.45 * full

    groups = {unit.name.split('_')[0]: unit.mutable_channel.num_kept
              for unit in mutator.mutable_units}
    kept = (groups['conv1'], groups['conv2'], groups['conv3'])
    assert sum(kept) < 0.8 * (48 + 96 + 96), kept
    x = torch.randn(1, 3, 32, 32)
    pruned, supernet = ThreeConvs(kept).eval(), ThreeConvs().eval()
    # interleaved, best of 3 rounds: robust to other load on the machine
    pruned_ms, supernet_ms = zip(*[(measured_ms(pruned, x), measured_ms(supernet, x))
                                   for _ in range(3)])
    assert min(pruned_ms) < 0.8 * min(supernet_ms), (kept, pruned_ms, supernet_ms)
