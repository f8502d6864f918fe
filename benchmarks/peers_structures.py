# Copyright (c) mmdms contributors. All rights reserved.
"""What each method of ``bench_peers.py`` chose: depth and width per stage, at each budget.

Reads the ``subnet.json`` every run of the comparison exported under its work dir (DMS, the
uniform baselines, evolution, DMCP, GroupFisher and Torch-Pruning all end in one) and prints, per
supernet and budget, one row per method: for each stage the blocks kept and the mean fraction of
its widths' elements kept, averaged over the seeds found::

    .venv/bin/python benchmarks/peers_structures.py [--work-dir work_dirs/bench_peers/subset10000]

The first block of a stage changes stride or channels and is never searched, so a stage's depth
is its searched blocks kept plus one. Widths are grouped by the stage of the layer that produces
them (``backbone.layerN``; the stem and the last conv under their own names).
"""
import argparse
import glob
import json
import os.path as osp
import re
import statistics
from collections import defaultdict
from typing import Dict, List, Tuple

METHOD_ORDER = ('dms_p', 'dms_np', 'uniform_width', 'uniform_depth_width', 'evolution', 'dmcp',
                'group_fisher', 'torch_pruning')


def stage_of(layer_key: str) -> str:
    """``backbone.layer2.0.conv2_(0, 32)_32`` -> ``layer2``; ``backbone.conv1...`` -> ``conv1``."""
    path = layer_key.split('_(')[0].split('.')
    parts = path[1:] if path[0] == 'backbone' else path
    return parts[0]


def summarize(subnet: dict) -> Dict[str, Tuple[int, int, float]]:
    """stage -> (blocks kept, blocks, mean fraction of width elements kept)."""
    fractions = defaultdict(list)
    for key, width in subnet['widths'].items():
        fractions[stage_of(key)].append(width['kept'] / width['total'])
    depths = {}
    for key, stage in subnet['stages'].items():
        depths[stage_of(key)] = (stage['kept'] + 1, stage['total'] + 1)
    return {name: (*depths.get(name, (1, 1)), statistics.mean(values))
            for name, values in fractions.items()}


def collect(work_dir: str) -> Dict[Tuple[str, str, str], List[dict]]:
    """(supernet, budget, method) -> the summaries of its seeds' runs."""
    found = defaultdict(list)
    pattern = osp.join(work_dir, '*', 'seed*', '*', '*', 'subnet', 'subnet.json')
    for path in sorted(glob.glob(pattern)):
        method_dir = osp.dirname(osp.dirname(path))
        budget_dir = osp.dirname(method_dir)
        supernet = osp.basename(osp.dirname(osp.dirname(budget_dir)))
        with open(path) as f:
            found[(supernet, osp.basename(budget_dir), osp.basename(method_dir))].append(
                summarize(json.load(f)))
    return found


def _stage_sort_key(name: str):
    match = re.fullmatch(r'layer(\d+)', name)
    return (1, int(match.group(1)), '') if match else (0 if name == 'conv1' else 2, 0, name)


def tables(found: Dict[Tuple[str, str, str], List[dict]]) -> str:
    """Markdown, one table per supernet and budget."""
    lines = []
    for supernet, budget in sorted({(s, b) for s, b, _ in found}):
        methods = sorted((m for s, b, m in found if (s, b) == (supernet, budget)),
                         key=lambda m: (METHOD_ORDER.index(m.split('+')[0])
                                        if m.split('+')[0] in METHOD_ORDER else 99, m))
        stages = sorted({name for m in methods for run in found[(supernet, budget, m)]
                         for name in run}, key=_stage_sort_key)
        lines += ['', f'{supernet}, {budget} fewer MACs (blocks kept / blocks, widths kept):', '',
                  '| method | seeds | ' + ' | '.join(stages) + ' |',
                  '|---|---|' + '---|' * len(stages)]
        for method in methods:
            runs = found[(supernet, budget, method)]
            cells = []
            for name in stages:
                values = [run[name] for run in runs if name in run]
                depth = statistics.mean(v[0] for v in values)
                width = f'{statistics.mean(v[2] for v in values):.2f}'
                cells.append(f'{depth:.3g}/{values[0][1]} · {width}' if values[0][1] > 1 else width)
            lines.append(f'| {method} | {len(runs)} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'bench_peers', 'subset10000'),
                        help="bench_peers.py's work dir for one data size")
    args = parser.parse_args()
    found = collect(args.work_dir)
    if not found:
        raise SystemExit(f"peers_structures: no subnet.json under '{args.work_dir}/<supernet>/"
                         f"seed*/<budget>/<method>/subnet/'; run benchmarks/bench_peers.py first "
                         f'or pass its --work-dir')
    print(tables(found))


if __name__ == '__main__':
    main()
