# Copyright (c) mmdms contributors. All rights reserved.
"""DMS against uniform scaling at equal MACs, on the digits data (issue #8, part 4).

For every seed: a DMS search (``configs/dms/demo/digits_search.py``) exported and retrained
from scratch (DMS_np), the same search without importance normalisation (the paper's Table 12
ablation), and two uniformly scaled supernets at the DMS subnet's MACs (within 2%): widths only,
and depth and widths together. All retrain with the same recipe and budget
(``configs/dms/demo/digits_retrain.py``). Prints mean +- std of the validation top-1 and the
search cost in seconds.

``python benchmarks/bench_quality.py [--seeds 0 1 2] [--work-dir work_dirs/bench_quality]``
"""
import argparse
import json
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


def run_seed(work: str, seed: int) -> dict:
    work = osp.join(work, f'seed{seed}')
    subnets = dict(dms=searched(osp.join(work, 'dms'), seed, {}),
                   dms_no_norm=searched(osp.join(work, 'dms_no_norm'), seed, NO_NORMALISATION))
    macs = subnets['dms']['macs']
    subnets['uniform_width'] = uniform(osp.join(work, 'uniform_width'), macs, False)
    subnets['uniform_depth_width'] = uniform(osp.join(work, 'uniform_depth_width'), macs, True)
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
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'bench_quality'))
    args = parser.parse_args()
    results = {}
    for seed in args.seeds:  # saved after every seed: a long run keeps what it measured
        results[seed] = run_seed(args.work_dir, seed)
        with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
            json.dump(results, f, indent=2)
    print(f'\nseeds {args.seeds}; retrain: configs/dms/demo/digits_retrain.py\n')
    print('| model | MACs (M) | vs DMS MACs | params (M) | val top-1 (%) | search cost (s) |')
    print('|---|---|---|---|---|---|')
    seeds = list(results)
    for name in VARIANTS:
        rows = [results[s][name] for s in seeds]
        gaps = [r['macs'] / results[s]['dms']['macs'] - 1 for s, r in zip(seeds, rows)]
        print(f"| {name} | {mean_std([r['macs'] / 1e6 for r in rows])} "
              f"| {max(gaps, key=abs):+.1%} "
              f"| {mean_std([r['params'] / 1e6 for r in rows])} "
              f"| {mean_std([r['top1'] for r in rows])} "
              f"| {mean_std([r['search_seconds'] for r in rows])} |")
    sys.stdout.flush()


if __name__ == '__main__':
    main()
