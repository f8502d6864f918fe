# Copyright (c) mmdms contributors. All rights reserved.
"""The main job (``make demo``): a whole DMS run on the offline digits data.

1. search: ``configs/dms/demo/digits_search.py`` (ResNet-34-CIFAR supernet, half its MACs);
2. export the searched subnet (``mmdms.apis.export_subnet``, fresh initialisation: DMS_np);
3. retrain it with the demo recipe (``configs/dms/demo/digits_retrain.py``);
4. a uniformly width-scaled supernet of the same MACs (within 2%), exported and retrained alike;
5. ``summary.json``, a printed table and the searched structure (``structure.png``).

``python tools/demo.py [--work-dir work_dirs/demo]``
"""
import argparse
import json
import os.path as osp
import sys

sys.path.append(osp.dirname(osp.abspath(__file__)))  # tools/ (also under runpy), for the helper
from polite_threads import passive_omp_wait  # noqa: E402

passive_omp_wait()  # before torch loads

import mmdms  # noqa: E402,F401  (compat shims and registrations come before any OpenMMLab import)
import torch  # noqa: E402

from mmdms.apis import (build_search_model, export_subnet, load_config, run_search,  # noqa: E402
                        run_training, uniform_structure)
from mmdms.structures import load_subnet  # noqa: E402
from mmdms.visualization import plot_structure  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SEARCH_CONFIG = osp.join(REPO, 'configs', 'dms', 'demo', 'digits_search.py')
RETRAIN_CONFIG = osp.join(REPO, 'configs', 'dms', 'demo', 'digits_retrain.py')


def uniform_subnet(macs: float, work_dir: str, scale_depth: bool = False) -> dict:
    """Export the uniformly scaled supernet whose MACs are within 2% of ``macs``."""
    model = build_search_model(load_config(SEARCH_CONFIG))
    uniform_structure(model, macs, scale_depth=scale_depth)
    checkpoint = work_dir + '_search_state.pth'
    torch.save(dict(meta=dict(uniform=True), state_dict=model.state_dict()), checkpoint)
    return export_subnet(SEARCH_CONFIG, checkpoint, work_dir, reinit=True, force=True)


def retrain(subnet: dict, work_dir: str) -> float:
    """Retrain an exported subnet with the demo recipe; its validation top-1."""
    options = dict(model=dict(subnet=osp.join(subnet['work_dir'], 'subnet.json')))
    return run_training(RETRAIN_CONFIG, work_dir, options)['accuracy/top1']


def main() -> None:
    parser = argparse.ArgumentParser(description='mmdms demo: search, export, retrain on digits')
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'demo'))
    work = osp.abspath(parser.parse_args().work_dir)

    found = run_search(SEARCH_CONFIG, osp.join(work, 'search'))
    dms = export_subnet(SEARCH_CONFIG, found['checkpoint'], osp.join(work, 'subnet'),
                        reinit=True, force=True)
    uniform = uniform_subnet(dms['macs'], osp.join(work, 'uniform'))
    summary = dict(
        supernet_macs=found['supernet'], target_macs=found['target'],
        subnet_macs=dms['macs'], subnet_params=dms['params'],
        subnet_top1=retrain(dms, osp.join(work, 'subnet_retrain')),
        uniform_macs=uniform['macs'], uniform_params=uniform['params'],
        uniform_top1=retrain(uniform, osp.join(work, 'uniform_retrain')),
        search_seconds=round(found['seconds'], 1))
    summary['structure_png'] = plot_structure(
        load_subnet(osp.join(dms['work_dir'], 'subnet.json')),
        osp.join(work, 'structure.png'), title='DMS on digits: searched vs supernet')
    with open(osp.join(work, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)

    print(dms['table'])
    print(f"\n{'model':<24}{'MACs':>10}{'params':>10}{'val top-1':>11}")
    print(f"{'supernet (ResNet-34)':<24}{summary['supernet_macs'] / 1e6:>9.2f}M")
    print(f"{'target (50%)':<24}{summary['target_macs'] / 1e6:>9.2f}M")
    for name, key in (('DMS subnet', 'subnet'), ('uniform width scaling', 'uniform')):
        print(f"{name:<24}{summary[key + '_macs'] / 1e6:>9.2f}M"
              f"{summary[key + '_params'] / 1e6:>9.3f}M{summary[key + '_top1']:>10.2f}%")
    print(f"\nsummary: {osp.join(work, 'summary.json')}; structure: {summary['structure_png']}")


if __name__ == '__main__':
    main()
