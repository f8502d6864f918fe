# Copyright (c) mmdms contributors. All rights reserved.
"""DMS against uniform scaling at equal MACs, on the digits data (issue #8, part 4).

For every seed: a DMS search (``configs/dms/demo/digits_search.py``) exported and retrained
from scratch (DMS_np), the same search without importance normalisation (the paper's Table 12
ablation), and two uniformly scaled supernets at the DMS subnet's MACs (within 2%): widths only,
and depth and widths together. All retrain with the same recipe and budget
(``configs/dms/demo/digits_retrain.py``). Prints mean +- std of the validation top-1 and the
search cost in seconds.

``python benchmarks/bench_quality.py [--seeds 0 1 2] [--target-ratio 0.5]
[--variants dms_no_norm uniform_width ...] [--extra dms_lr_structure_1e-3 ...]
[--work-dir work_dirs/bench_quality]``

``--extra`` adds DMS searches with one setting changed (:data:`EXTRA_VARIANTS`: the structure
learning rate, ``lambda_resource``, the temperature, the search length), each exported and
retrained like the others, for finding out why a setting wins or loses.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import sys
import time

import mmdms  # noqa: F401
import torch

from mmdms.apis import (build_search_model, export_subnet, load_config, run_search,
                        run_training, uniform_structure)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SEARCH = osp.join(REPO, 'configs', 'dms', 'demo', 'digits_search.py')
RETRAIN = osp.join(REPO, 'configs', 'dms', 'demo', 'digits_retrain.py')
NO_NORMALISATION = dict(model=dict(mutator=dict(
    channel_unit_cfg=dict(default_args=dict(normalize=False)),
    depth_args=dict(normalize=False))))
#: The resource hook's index in the search config's ``custom_hooks``.
RESOURCE_HOOK = 'custom_hooks.1'
#: DMS searches with one setting changed (config options), run with ``--extra``.
EXTRA_VARIANTS = {
    # 1e-3 / the base lr 0.05
    'dms_lr_structure_1e-3': {'optim_wrapper.paramwise_cfg.custom_keys.dms_ratio.lr_mult': 0.02},
    'dms_lambda_0.5': {f'{RESOURCE_HOOK}.lambda_resource': 0.5},
    # lambda = 4N for widths (the paper's 4N for depths stays): sharper masks
    'dms_temperature_4N': {
        'model.mutator.channel_unit_cfg.default_args.lambda_scale': 4.0},
    # twice the search: 16 epochs of decay, 4 width-only
    'dms_20_epochs': {'train_cfg.max_epochs': 20, 'train_cfg.val_interval': 20,
                      f'{RESOURCE_HOOK}.width_only_epochs': 4},
}
VARIANTS = ('dms', 'dms_no_norm', 'uniform_width', 'uniform_depth_width')


def seeded(options: dict, seed: int) -> dict:
    return dict(options, randomness=dict(seed=seed, deterministic=False))


def searched(work: str, seed: int, options: dict) -> dict:
    found = run_search(SEARCH, osp.join(work, 'search'), seeded(options, seed))
    subnet = export_subnet(SEARCH, found['checkpoint'], osp.join(work, 'subnet'),
                           reinit=True, force=True, cfg_options=options)
    return dict(subnet, search_seconds=found['seconds'])


def uniform(work: str, macs: float, scale_depth: bool) -> dict:
    start = time.perf_counter()
    model = build_search_model(load_config(SEARCH))
    uniform_structure(model, macs, scale_depth=scale_depth)
    checkpoint = osp.join(work + '_state.pth')
    torch.save(dict(meta=dict(uniform=True), state_dict=model.state_dict()), checkpoint)
    subnet = export_subnet(SEARCH, checkpoint, work, reinit=True, force=True)
    return dict(subnet, search_seconds=time.perf_counter() - start)


def retrained_top1(subnet: dict, work: str, seed: int) -> float:
    options = seeded(dict(model=dict(subnet=osp.join(subnet['work_dir'], 'subnet.json'))),
                     seed)
    return run_training(RETRAIN, work, options)['accuracy/top1']


def run_seed(work: str, seed: int, target: dict, variants=VARIANTS, extra=()) -> dict:
    work = osp.join(work, f'seed{seed}')
    subnets = dict(dms=searched(osp.join(work, 'dms'), seed, dict(target)))
    if 'dms_no_norm' in variants:
        subnets['dms_no_norm'] = searched(osp.join(work, 'dms_no_norm'), seed,
                                          dict(NO_NORMALISATION, **target))
    for name in extra:
        subnets[name] = searched(osp.join(work, name), seed, dict(EXTRA_VARIANTS[name], **target))
    macs = subnets['dms']['macs']
    for name, scale_depth in (('uniform_width', False), ('uniform_depth_width', True)):
        if name in variants:
            subnets[name] = uniform(osp.join(work, name), macs, scale_depth)
    return {name: dict(macs=s['macs'], params=s['params'],
                       search_seconds=s['search_seconds'],
                       top1=retrained_top1(s, osp.join(work, f'{name}_retrain'), seed))
            for name, s in subnets.items()}


def mean_std(values) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f'{statistics.mean(values):.2f} ± {std:.2f}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--target-ratio', type=float, default=None,
                        help="the MACs target as a fraction of the supernet's (default: the "
                        "search config's, 0.5)")
    parser.add_argument('--variants', nargs='*', default=list(VARIANTS), choices=VARIANTS,
                        help='the comparisons to run (dms always runs)')
    parser.add_argument('--extra', nargs='*', default=[], choices=sorted(EXTRA_VARIANTS),
                        help='DMS searches with one setting changed')
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'bench_quality'))
    args = parser.parse_args()
    target = {} if args.target_ratio is None else {
        f'{RESOURCE_HOOK}.target_ratio': args.target_ratio}
    os.makedirs(args.work_dir, exist_ok=True)
    results = {}
    for seed in args.seeds:  # saved after every seed: a long run keeps what it measured
        results[seed] = run_seed(args.work_dir, seed, target, args.variants, args.extra)
        with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
            json.dump(results, f, indent=2)
    print(f'\nseeds {args.seeds}; target ratio {args.target_ratio or "of the config"}; '
          'retrain: configs/dms/demo/digits_retrain.py\n')
    print('| model | MACs (M) | vs DMS MACs | params (M) | val top-1 (%) | per seed | '
          'search cost (s) |')
    print('|---|---|---|---|---|---|---|')
    seeds = list(results)
    shown = ['dms'] + [v for v in args.variants if v == 'dms_no_norm'] + args.extra + [
        v for v in args.variants if v.startswith('uniform')]
    for name in shown:
        rows = [results[s][name] for s in seeds]
        gaps = [r['macs'] / results[s]['dms']['macs'] - 1 for s, r in zip(seeds, rows)]
        per_seed = ', '.join(f"{r['top1']:.2f}" for r in rows)
        print(f"| {name} | {mean_std([r['macs'] / 1e6 for r in rows])} "
              f"| {max(gaps, key=abs):+.1%} "
              f"| {mean_std([r['params'] / 1e6 for r in rows])} "
              f"| {mean_std([r['top1'] for r in rows])} "
              f"| {per_seed} "
              f"| {mean_std([r['search_seconds'] for r in rows])} |")
    sys.stdout.flush()


if __name__ == '__main__':
    main()
