# Copyright (c) mmdms contributors. All rights reserved.
"""``benchmarks/bench_peers.py --variants``: each sensitivity variant changes exactly the one knob
of the Fashion-MNIST search config it is named after, by the factor it is named after."""

import pytest

from mmdms.apis import load_config

from dms_test_utils import load_script


def bench_peers():
    return load_script('benchmarks', 'bench_peers.py')


def flat(value, prefix=''):
    if isinstance(value, dict):
        return {k: v for key, item in value.items()
                for k, v in flat(item, f'{prefix}{key}.').items()}
    if isinstance(value, (list, tuple)):
        return {k: v for i, item in enumerate(value) for k, v in flat(item, f'{prefix}{i}.').items()}
    return {prefix[:-1]: value}


#: variant -> (the flattened keys it may change, the value they take relative to the default;
#: None where the default is absent or not a number)
KNOBS = {
    'temperature_x0.25': ({'model.mutator.channel_unit_cfg.default_args.lambda_scale'}, None),
    'temperature_x4': ({'model.mutator.channel_unit_cfg.default_args.lambda_scale'}, None),
    'lambda_resource_x0.25': ({'custom_hooks.1.lambda_resource'}, 0.25),
    'lambda_resource_x4': ({'custom_hooks.1.lambda_resource'}, 4.0),
    'lr_structure_x0.25': ({'optim_wrapper.paramwise_cfg.custom_keys.dms_ratio.lr_mult'}, 0.25),
    'lr_structure_x4': ({'optim_wrapper.paramwise_cfg.custom_keys.dms_ratio.lr_mult'}, 4.0),
    'search_x2': ({'train_cfg.max_epochs', 'train_cfg.val_interval',
                   'default_hooks.checkpoint.interval'}, 2.0),
    'ema_0.9': ({'model.mutator.channel_unit_cfg.default_args.importance',
                 'model.mutator.channel_unit_cfg.default_args.importance.type',
                 'model.mutator.channel_unit_cfg.default_args.importance.decay',
                 'model.mutator.depth_args.importance.type',
                 'model.mutator.depth_args.importance.decay'}, None),
    'no_width_only': ({'custom_hooks.1.width_only_epochs'}, None),
    'importance_task_only': ({'model.importance_from_task_loss'}, None),
}


@pytest.mark.parametrize('supernet', ['resnet', 'mbv2'])
def test_each_variant_changes_its_one_knob(supernet):
    module = bench_peers()
    assert set(module.VARIANTS) == set(KNOBS)
    search = module.config(supernet, 'search')
    default = flat(load_config(search).to_dict())
    for variant, (keys, factor) in KNOBS.items():
        changed = flat(load_config(search, module.variant_options(variant, search)).to_dict())
        differ = {k for k in set(default) | set(changed) if default.get(k) != changed.get(k)}
        assert differ and differ <= keys, (variant, differ)
        if factor is not None:
            assert all(changed[k] == pytest.approx(factor * default[k]) for k in differ), variant
    assert module.method_name('dms_np', 'ema_0.9') == 'dms_np+ema_0.9'


def test_sensitivity_table_gives_each_variant_against_its_seeds_default():
    module = bench_peers()

    def row(method, top1=None, variant=None, seed=0, error=None):
        return dict(key=f'{method}/{seed}', supernet='resnet', budget='4x', method=method,
                    variant=variant, seed=seed, subset=10000, top1=top1,
                    status='failed' if error else 'ok', error=error)

    records = {r['key']: r for r in (
        row('dms_np', 85.0), row('dms_np+ema_0.9', 85.5, 'ema_0.9'),
        row('dms_np+no_width_only', None, 'no_width_only', error=(
            'AssertionError: dms_np ended at 3132951 MACs, -5.25% from the target 3306448 '
            '(tolerance 2%)')))}
    text = module.sensitivity_table(records, 10000)
    assert '| default | 85.00 (s0) |' in text
    assert '| ema_0.9 | 85.50 (+0.50) |' in text
    assert '| no_width_only | missed the budget (-5.25%) |' in text
    assert 'temperature_x4' not in text  # not run: no row
