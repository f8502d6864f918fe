# Copyright (c) mmdms contributors. All rights reserved.
"""The latency model's correction to the measured whole model: maths, fit and serialisation,
under a fake, deterministic timer (no wall clock)."""
import pytest
import torch

from dms_test_utils import MacsTimer
from mmdms.models.task_modules import LatencyModel, latency_correction
from mmdms.models.task_modules.latency_model import per_layer_correction
from test_latency_model import ThreeConvs
from test_resource_estimator import prepare


def test_latency_correction_maths():
    assert latency_correction(4.0, 8.0, 'scale') == (2.0, 0.0)
    assert latency_correction(4.0, 8.0, 'offset') == (1.0, 4.0)
    assert latency_correction(4.0, 8.0, 'none') == (1.0, 0.0)
    scale, overhead = latency_correction(3.0, 2.0, 'scale')  # a sum above the measurement
    assert overhead + scale * 3.0 == pytest.approx(2.0)
    with pytest.raises(ValueError, match="Unknown latency correction 'fast'"):
        latency_correction(1.0, 1.0, 'fast')
    with pytest.raises(ValueError, match='must both be positive'):
        latency_correction(0.0, 1.0, 'scale')


def test_per_layer_correction_maths():
    # measured = 2 * sum + 0.1 per layer over 10 layers; the narrower model gives the slope
    scale, per_layer = per_layer_correction(4.0, 2 * 4.0 + 1.0, 1.0, 2 * 1.0 + 1.0, 10)
    assert (scale, per_layer) == pytest.approx((2.0, 0.1))
    # noise: a slope below 1 is clipped to 1 (the layers take at least their own time) ...
    scale, per_layer = per_layer_correction(4.0, 9.0, 1.0, 8.5, 10)
    assert (scale, per_layer) == pytest.approx((1.0, 0.5))
    # ... and above measured / sum to it (no negative per-layer time)
    assert per_layer_correction(4.0, 9.0, 1.0, 0.1, 10) == pytest.approx((9 / 4, 0.0))
    # a sum above the measured supernet: scaled down, nothing per layer
    assert per_layer_correction(4.0, 3.0, 1.0, 1.0, 10) == pytest.approx((0.75, 0.0))
    for scale, per_layer in [per_layer_correction(4.0, 9.0, 1.0, x, 10)
                             for x in (0.1, 3.0, 8.5)]:
        assert scale * 4.0 + per_layer * 10 == pytest.approx(9.0)  # the supernet is exact
    with pytest.raises(ValueError, match='must be positive'):
        per_layer_correction(4.0, 9.0, 1.0, 3.0, 0)


def kept_widths(groups):
    return tuple(groups[n].num_kept * 8 for n in ('conv1', 'conv2', 'conv3'))


def fitted(correction='scale', timer=None, **timer_args):
    torch.manual_seed(0)
    model = ThreeConvs()
    mutator, estimator = prepare(model, 16, channel_unit_cfg=dict(
        type='DMSChannelUnit', default_args=dict(step=8)))
    groups = {unit.name.split('_')[0]: unit.mutable_channel for unit in mutator.mutable_units}
    timer = timer or MacsTimer(**timer_args)
    reduced = dict(reduced=lambda: ThreeConvs(kept_widths(groups))) \
        if correction == 'per_layer' else {}
    estimator.fit_latency(model, supernet=ThreeConvs(), correction=correction, timer=timer,
                          fractions=(0.5, 1.0), **reduced)
    return mutator, estimator, timer


def static_ms(timer, kept, estimator):
    from mmdms.models.task_modules.latency_model import TensorModeForward
    return timer(TensorModeForward(ThreeConvs(kept).eval(), lambda m, x: m(x)),
                 torch.zeros(estimator.input_shape))


@pytest.mark.parametrize('correction', ['per_layer', 'scale', 'offset'])
def test_supernet_estimate_equals_the_measured_supernet(correction):
    _, estimator, timer = fitted(correction, whole_per_layer=0.05)
    fit = estimator.latency_model
    measured = static_ms(timer, (48, 96, 96), estimator)
    assert fit.supernet_ms == pytest.approx(measured)
    assert fit.layers_ms == pytest.approx((measured - 4 * 0.05) / timer.unexplained, rel=1e-5)
    assert estimator.estimate('latency', full=True).item() == pytest.approx(measured, rel=1e-5)
    # every mask at its initial value keeps everything: the hard estimate is the supernet's too
    assert estimator.estimate('latency', hard=True).item() == pytest.approx(measured, rel=1e-5)


@pytest.mark.parametrize('correction, whole_per_layer', [('scale', 0.0), ('per_layer', 0.05)])
def test_correction_predicts_pruned_static_models_and_stays_differentiable(
        correction, whole_per_layer):
    mutator, estimator, timer = fitted(correction, whole_per_layer=whole_per_layer)
    fit = estimator.latency_model
    assert (fit.scale, fit.per_layer_ms) == pytest.approx((timer.unexplained, whole_per_layer),
                                                          rel=1e-4, abs=1e-6)
    if correction == 'per_layer':  # the fit left the structure as it found it
        assert fit.reduced_ms[0] < fit.layers_ms
        assert estimator.estimate('latency', hard=True).item() == pytest.approx(
            fit.supernet_ms, rel=1e-5)
    groups = {unit.name.split('_')[0]: unit.mutable_channel for unit in mutator.mutable_units}
    for kept in [(16, 48, 96), (48, 24, 8), (8, 8, 8)]:
        for name, width in zip(('conv1', 'conv2', 'conv3'), kept):
            groups[name].set_kept(width // 8)  # elements of 8 channels
        predicted = estimator.estimate('latency', hard=True).item()
        assert predicted == pytest.approx(static_ms(timer, kept, estimator), rel=1e-4), kept
    soft = estimator.estimate('latency')
    soft.backward()
    grads = [m.dms_ratio.grad for m in mutator.dms_mutables()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_scale_alone_misses_a_per_layer_cost_that_per_layer_finds():
    """What the second measurement buys: with a constant cost per layer call outside the
    layers, 'scale' overestimates narrow models; 'per_layer' does not."""
    errors = {}
    for correction in ('scale', 'per_layer'):
        mutator, estimator, timer = fitted(correction, whole_per_layer=0.2)
        groups = {u.name.split('_')[0]: u.mutable_channel for u in mutator.mutable_units}
        for name in groups:
            groups[name].set_kept(1)
        errors[correction] = estimator.estimate('latency', hard=True).item() / \
            static_ms(timer, (8, 8, 8), estimator) - 1
    assert errors['per_layer'] == pytest.approx(0, abs=1e-4)
    assert errors['scale'] < -0.1, errors  # a narrow model predicted far too fast


def test_offset_correction_keeps_a_constant_and_uncorrected_sum_stays_below():
    _, estimator, timer = fitted('offset')
    fit = estimator.latency_model
    assert fit.scale == 1.0 and fit.overhead_ms == pytest.approx(
        fit.supernet_ms - fit.layers_ms)
    _, plain, _ = fitted('none')
    assert plain.latency_model.supernet_ms is not None  # measured, but not applied
    assert plain.estimate('latency', full=True).item() == pytest.approx(
        fit.layers_ms, rel=1e-5)


def test_bad_fit_arguments_fail_before_timing():
    model = ThreeConvs()
    _, estimator = prepare(model, 16)
    timer = MacsTimer()
    with pytest.raises(ValueError, match='needs the measured whole model'):
        estimator.fit_latency(model, correction='scale', timer=timer)
    with pytest.raises(ValueError, match="'per_layer' also times a narrower static model"):
        estimator.fit_latency(model, supernet=ThreeConvs(), correction='per_layer', timer=timer)
    with pytest.raises(ValueError, match="Unknown latency correction 'exact'"):
        estimator.fit_latency(model, supernet=ThreeConvs(), correction='exact', timer=timer)
    assert timer.calls == 0
    estimator.fit_latency(model, timer=timer, fractions=(1.0, ))  # no supernet: no correction
    assert estimator.latency_model.correction == 'none'
    assert estimator.latency_model.supernet_ms is None


def test_latency_model_round_trips_through_plain_values():
    _, estimator, _ = fitted('per_layer', whole_per_layer=0.05)
    fit = estimator.latency_model
    data = fit.to_dict()
    assert all(isinstance(v, (int, float, str, list, type(None))) for v in data.values())
    again = LatencyModel.from_dict(data)
    assert (again.scale, again.overhead_ms, again.per_layer_ms, again.supernet_ms,
            again.reduced_ms, again.threads) == \
        (fit.scale, fit.overhead_ms, fit.per_layer_ms, fit.supernet_ms, fit.reduced_ms,
         fit.threads)
    full = estimator.estimate('latency', full=True).item()
    estimator.latency_model = again
    assert estimator.estimate('latency', full=True).item() == pytest.approx(full)


def test_latency_model_of_another_model_is_refused():
    _, estimator, _ = fitted('scale')
    estimator.latency_model.layers.pop()
    with pytest.raises(RuntimeError, match='fitted on another model'):
        estimator.estimate('latency')


def test_plain_architecture_needs_the_config():
    from mmengine.model import BaseModel

    from mmdms.models import DMS

    class Classifier(BaseModel):
        def __init__(self):
            super().__init__()
            self.net = ThreeConvs()

        def forward(self, inputs, data_samples=None, mode='tensor'):
            return self.net(inputs)

    search = DMS(Classifier(), mutator=dict(type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=(1, 3, 16, 16), tracer_type='FxTracer')))
    with pytest.raises(ValueError, match='Give DMS the architecture as a config dict'):
        search.build_plain_architecture()
