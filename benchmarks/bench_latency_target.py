# Copyright (c) mmdms contributors. All rights reserved.
"""A latency budget that is met: search to ``x`` ms, export, measure the exported model.

``python benchmarks/bench_latency_target.py [--threads 1] [--ratio 0.5] [--skip-digits]
[--skip-family] [--family mobilenet_v2] [--family-size 96]``

Latency here is what :func:`mmdms.models.task_modules.time_ms` measures and what the latency
model is fitted to: one sample at the estimator's ``input_shape`` (batch 1), eval mode,
``torch.no_grad``, ``tensor`` mode, warm-up calls, then the median of the timed calls, with
``--threads`` intra-op threads. The exported model is measured alternately with the plain
supernet, ``--rounds`` rounds of ``--repeats`` calls each, in this one process; each figure is
the median over the rounds.

(a) digits: ``configs/dms/demo/digits_search.py`` shrunk (``--epochs`` epochs on ``--samples``
    images, the last width-only; the structure learning rate 4x the demo's, as the search is
    shorter) with ``ResourceLossHook(resource='latency', target='<x>ms')``, ``x`` = ``--ratio``
    of the supernet latency measured here first; exported with
    :func:`mmdms.apis.export_subnet` (``subnet.json`` holds the predicted ``latency_ms``).
(b) one family (``configs/dms/<family>.py`` at ``--family-size`` px), without training: random
    importance, the latency model fitted as the hook fits it, then the structure parameters
    moved against the latency loss alone to the target
    (:func:`bench_exactness.descend_to_target`, then the two-sided loss), the static subnet
    built from the hard masks.

Prints a markdown table: target, predicted (estimator, hard masks), the per-layer sum without
the correction, measured exported model, error against the target, and the supernet's latency
at the fit and now (the machine is shared: when it drifts, the measured latency rescaled by
``fit / now`` separates the model's error from the machine's).
"""
import argparse
import glob
import json
import os
import os.path as osp
import statistics
import sys
import tempfile
import time

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import torch  # noqa: E402

import mmdms  # noqa: F401,E402
from mmdms.apis import (build_architecture, build_search_model, export_subnet,  # noqa: E402
                        load_config, static_subnet)
from mmdms.models import DMSSubnet  # noqa: E402
from mmdms.models.task_modules import time_ms  # noqa: E402
from mmdms.models.task_modules.latency_model import TensorModeForward  # noqa: E402
from mmdms.models.utils import fit_latency_and_broadcast  # noqa: E402
from mmdms.structures import subnet_from_algorithm  # noqa: E402

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from bench_exactness import descend_to_target, match_target, random_importance  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def whole(model):
    return TensorModeForward(model.eval(), lambda m, x: m(x, mode='tensor'))


def measure_alternating(models: dict, input_shape, rounds: int, repeats: int) -> dict:
    """Median over ``rounds`` of each model's :func:`time_ms`, the models taking turns."""
    x = torch.randn(tuple(input_shape), generator=torch.Generator().manual_seed(0))
    runs = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            runs[name].append(time_ms(whole(model), x, repeats, warmup=3))
    return {name: statistics.median(times) for name, times in runs.items()}


def row(name, target, predicted, fitted, measured, supernet_now, uncorrected, extra=''):
    return dict(name=name, target=target, predicted=predicted, uncorrected=uncorrected,
                measured=measured, error=measured / target - 1,
                supernet_fit=fitted.supernet_ms, supernet_now=supernet_now, extra=extra)


def correction_note(fitted) -> str:
    reduced = '' if fitted.reduced_ms is None else \
        f', half width: sum {fitted.reduced_ms[0]:.2f} / measured {fitted.reduced_ms[1]:.2f} ms'
    return (f'{fitted.correction}: scale {fitted.scale:.2f}, per layer '
            f'{fitted.per_layer_ms:.3f} ms, offset {fitted.overhead_ms:.2f} ms{reduced}')


def uncorrected(model) -> float:
    """The hard-mask per-layer sum without the correction."""
    fitted = model.estimator.latency_model
    saved = (fitted.scale, fitted.overhead_ms, fitted.per_layer_ms)
    fitted.scale, fitted.overhead_ms, fitted.per_layer_ms = 1.0, 0.0, 0.0
    try:
        return model.estimator.estimate('latency', hard=True).item()
    finally:
        fitted.scale, fitted.overhead_ms, fitted.per_layer_ms = saved


def digits_row(args) -> dict:
    from mmengine.runner import Runner
    cfg = load_config(osp.join(REPO, 'configs', 'dms', 'demo', 'digits_search.py'))
    work_dir = tempfile.mkdtemp(prefix='bench_latency_')
    cfg.work_dir = osp.join(work_dir, 'search')
    cfg.train_dataloader.dataset.indices = args.samples
    cfg.val_dataloader.dataset.indices = 40
    cfg.train_cfg = dict(by_epoch=True, max_epochs=args.epochs, val_interval=args.epochs)
    cfg.optim_wrapper.paramwise_cfg.custom_keys.dms_ratio.lr_mult *= 4
    cfg.default_hooks.logger.interval = 50
    input_shape = tuple(cfg.model.mutator.parse_cfg.demo_input)
    supernet = build_architecture(cfg)
    supernet_ms = measure_alternating(dict(s=supernet), input_shape, args.rounds,
                                      args.repeats)['s']
    target = round(args.ratio * supernet_ms, 3)
    for hook in cfg.custom_hooks:
        if hook['type'] == 'ResourceLossHook':
            hook.update(resource='latency', target=f'{target}ms', target_ratio=None,
                        latency_fit=dict(correction=args.correction))
    start = time.perf_counter()
    runner = Runner.from_cfg(cfg)
    runner.train()
    search_s = time.perf_counter() - start
    checkpoint = sorted(glob.glob(osp.join(cfg.work_dir, 'epoch_*.pth')))[-1]
    out = export_subnet(cfg, checkpoint, osp.join(work_dir, 'export'))
    with open(out['files']['subnet.json']) as f:
        subnet = json.load(f)
    static = DMSSubnet(build_architecture(cfg), subnet)
    static.load_state_dict(torch.load(out['files']['pruned.pth'], map_location='cpu',
                                      weights_only=False)['state_dict'])
    times = measure_alternating(dict(subnet=static, supernet=supernet), input_shape,
                                args.rounds, args.repeats)
    fitted = runner.model.estimator.latency_model
    return row('digits (ResNet-34 CIFAR, 16 px)', target, subnet['latency_ms'], fitted,
               times['subnet'], times['supernet'], uncorrected(runner.model),
               f'{correction_note(fitted)}; search {search_s:.0f} s, {args.epochs} epochs x '
               f'{args.samples} images; '
               f"MACs {subnet['macs'] / 1e6:.2f}M of {subnet['supernet']['macs'] / 1e6:.2f}M")


def family_row(args) -> dict:
    cfg = load_config(osp.join(REPO, 'configs', 'dms', f'{args.family}.py'))
    size = args.family_size
    cfg.model.mutator.parse_cfg.demo_input = (1, 3, size, size)
    hook = next(h for h in cfg.custom_hooks if h['type'] == 'ResourceLossHook')
    torch.manual_seed(0)
    model = build_search_model(cfg).eval()
    random_importance(model, 0)
    start = time.perf_counter()
    reduced = dict(reduced=lambda: model.build_plain_architecture(pruned=True)) \
        if args.correction == 'per_layer' else {}
    fit_latency_and_broadcast(model.estimator, model.architecture,
                              supernet=model.build_plain_architecture,
                              correction=args.correction, **reduced)
    fit_s = time.perf_counter() - start
    fitted = model.estimator.latency_model
    supernet = model.build_plain_architecture()
    supernet_ms = measure_alternating(dict(s=supernet), model.estimator.input_shape,
                                      args.rounds, args.repeats)['s']
    target = round(args.ratio * supernet_ms, 3)
    steps = descend_to_target(model, target, hook.get('lambda_resource', 1.0), args.lr,
                              args.max_steps, resource='latency')
    match_target(model, args.lr / 10, args.match_steps)
    predicted = model.estimator.estimate('latency', hard=True).item()
    subnet = subnet_from_algorithm(model)
    static = static_subnet(model, cfg, subnet)
    times = measure_alternating(dict(subnet=static, supernet=supernet),
                                model.estimator.input_shape, args.rounds, args.repeats)
    return row(f'`{args.family}.py` at {size} px', target, predicted, fitted, times['subnet'],
               times['supernet'], uncorrected(model),
               f'{correction_note(fitted)}; fit {fit_s:.0f} s, {steps} + {args.match_steps} '
               'structure steps, no training; '
               f"MACs {subnet['macs'] / 1e6:.1f}M of {subnet['supernet']['macs'] / 1e6:.1f}M")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--ratio', type=float, default=0.5,
                        help='target as a fraction of the measured supernet latency')
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--epochs', type=int, default=8)
    parser.add_argument('--samples', type=int, default=512)
    parser.add_argument('--family', default='mobilenet_v2')
    parser.add_argument('--family-size', type=int, default=96)
    parser.add_argument('--lr', type=float, default=1e-2)
    parser.add_argument('--max-steps', type=int, default=400)
    parser.add_argument('--match-steps', type=int, default=50)
    parser.add_argument('--correction', default='per_layer',
                        choices=['per_layer', 'scale', 'offset', 'none'])
    parser.add_argument('--skip-digits', action='store_true')
    parser.add_argument('--skip-family', action='store_true')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f'load before: {os.getloadavg()}, threads {torch.get_num_threads()}', flush=True)
    rows = []
    if not args.skip_digits:
        rows.append(digits_row(args))
        print(rows[-1], flush=True)
    if not args.skip_family:
        rows.append(family_row(args))
        print(rows[-1], flush=True)
    print(f'load after: {os.getloadavg()}; correction {args.correction}\n')
    print('| model | target (ms) | predicted (ms) | per-layer sum, uncorrected (ms) | measured '
          'exported (ms) | measured / target | supernet at fit / now (ms) | measured x fit / '
          'now: / target, / predicted | notes |')
    print('|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        steady = r['measured'] * r['supernet_fit'] / r['supernet_now']
        print(f"| {r['name']} | {r['target']:.3f} | {r['predicted']:.3f} | "
              f"{r['uncorrected']:.3f} | {r['measured']:.3f} | {r['error']:+.1%} | "
              f"{r['supernet_fit']:.3f} / {r['supernet_now']:.3f} | "
              f"{steady / r['target'] - 1:+.1%}, {steady / r['predicted'] - 1:+.1%} | "
              f"{r['extra']} |")


if __name__ == '__main__':
    main()
