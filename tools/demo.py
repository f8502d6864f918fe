# Copyright (c) mmdms contributors. All rights reserved.
"""The main job (``make demo``): train on the offline digits data and report val top-1.

``python tools/demo.py [--work-dir work_dirs/demo]``
"""
import argparse
import json
import os.path as osp

import mmdms  # noqa: F401  (compat shims and registrations come before any OpenMMLab import)
from mmengine.config import Config
from mmengine.runner import Runner

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CLASSIFIER_CONFIG = osp.join(REPO, 'configs', 'demo', 'digits_resnet.py')


def train_and_evaluate(config: str, work_dir: str) -> dict:
    """Train ``config`` with an mmengine Runner and return its final validation metrics."""
    cfg = Config.fromfile(config)
    cfg.work_dir = work_dir
    runner = Runner.from_cfg(cfg)
    runner.train()
    return {k: float(v) for k, v in runner.val_loop.run().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description='mmdms demo on the digits data')
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'demo'))
    args = parser.parse_args()

    metrics = train_and_evaluate(CLASSIFIER_CONFIG, osp.join(args.work_dir, 'classifier'))
    summary = {'classifier_top1': metrics['accuracy/top1']}
    with open(osp.join(args.work_dir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    print(f"digits demo: val top-1 = {summary['classifier_top1']:.2f}% "
          f"(summary in {osp.join(args.work_dir, 'summary.json')})")


if __name__ == '__main__':
    main()
