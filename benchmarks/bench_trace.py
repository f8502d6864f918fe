# Copyright (c) mmdms contributors. All rights reserved.
"""Time DMSMutator.prepare_from_supernet (tracing + search-space build) on each model family.

``python benchmarks/bench_trace.py [--size 224]``

Models are built from the configs shipped in mmpretrain / mmyolo with random weights. Prints a
markdown table: groups and stages found, seconds to prepare, and the total.
"""
import argparse
import os.path as osp
import time

import mmdms  # noqa: F401
from mmrazor.registry import MODELS

MMPRETRAIN = ['resnet50_8xb32_in1k', 'efficientnet-b0_3rdparty_8xb32_in1k',
              'mobilenet-v2_8xb32_in1k', 'deit-tiny_4xb256_in1k']
YOLO_CONFIG = 'yolov8/yolov8_n_syncbn_fast_8xb16-500e_coco.py'


def build_yolov8():
    import mmyolo
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmyolo.registry import MODELS as YOLO_MODELS
    cfg = Config.fromfile(osp.join(osp.dirname(mmyolo.__file__), '.mim', 'configs', YOLO_CONFIG))
    init_default_scope('mmyolo')
    return YOLO_MODELS.build(cfg.model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--size', type=int, default=224)
    args = parser.parse_args()
    from mmpretrain import get_model
    builders = {name: (lambda n=name: get_model(n, pretrained=False)) for name in MMPRETRAIN}
    builders['yolov8_n (mmyolo)'] = build_yolov8
    print('| model | width groups | depth stages | conv/linear weights covered | prepare (s) |')
    print('|---|---|---|---|---|')
    total = 0.0
    for name, build in builders.items():
        model = build().eval()
        mutator = MODELS.build(dict(type='mmrazor.DMSMutator', parse_cfg=dict(
            type='ChannelAnalyzer', demo_input=(1, 3, args.size, args.size),
            tracer_type='FxTracer')))
        start = time.perf_counter()
        try:
            mutator.prepare_from_supernet(model)
        except Exception as e:  # noqa: BLE001  (reported in the table)
            seconds = time.perf_counter() - start
            print(f'| {name} | error: {type(e).__name__} | | | {seconds:.1f} |')
            total += seconds
            continue
        seconds = time.perf_counter() - start
        total += seconds
        print(f'| {name} | {len(mutator.width_mutables)} | {len(mutator.depth_mutables)} | '
              f'{mutator.weight_coverage:.1%} | {seconds:.1f} |')
    print(f'| total | | | | {total:.1f} |')


if __name__ == '__main__':
    main()
