# Copyright (c) mmdms contributors. All rights reserved.
"""CPU latency of the supernet, a DMS subnet and the uniformly scaled model at the same MACs.

``python benchmarks/bench_latency.py [--models resnet50 ...] [--size 160] [--yolo-size 320]
[--ratio 0.5] [--steps 1 8] [--batches 1 8] [--repeats 5] [--threads 2] [--seed 0]``

For each search config in ``configs/dms/`` (the paper's supernets) at ``--size`` px
(``--yolo-size`` for YOLOv8) and for each channel ``step`` of the width mutables
(``DMSMutableChannel(step=...)``, set through the mutator's ``channel_unit_cfg.default_args``;
step 8 rounds every kept width to a multiple of 8, the AVX2 vector of 8 floats):

* **DMS**: the search model with a random importance per width and depth, its structure moved
  by the config's resource loss alone to ``--ratio`` of the supernet's MACs (the helpers of
  ``bench_exactness.py``): a resource-driven structure, *not* a trained search;
* **uniform**: the same fraction of every width (``mmdms.apis.uniform_structure``, on the same
  search model), full depth, at the DMS subnet's MACs (within 2%, or as close as the steps
  allow: the table gives every model's MACs);
* **supernet**: the unpruned architecture.

Each is exported as the static model (``DMSSubnet``, the search weights) and to ONNX
(``mmdms.deploy.trace_to_onnx``, checked against PyTorch at batch 1), then timed in PyTorch
eager (``torch.no_grad``) and in onnxruntime (CPU provider, all graph optimisations) at each
batch size: every figure is the median of ``--repeats`` forwards after one warm-up, the models
of one family alternating in one process. Both runtimes use ``--threads`` intra-op threads and
idle threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``, onnxruntime's
``session.intra_op.allow_spinning=0``), so that another job on the cores slows the figures
without collapsing them. Prints markdown tables: MACs, latency, and speed-up over the supernet
next to the MACs ratio (supernet MACs / model MACs).
"""
import os

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # before torch: see the docstring

import argparse  # noqa: E402
import os.path as osp  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402
from bench_exactness import (descend_to_target, match_target, random_importance,  # noqa: E402
                             resource_hook_cfg)

import mmdms  # noqa: E402,F401
from mmdms.apis import (build_architecture, build_search_model, load_config,  # noqa: E402
                        static_subnet, uniform_structure)
from mmdms.deploy import (NetworkOutputs, compare_with_onnxruntime, require_onnx,  # noqa: E402
                          trace_to_onnx)
from mmdms.structures import subnet_from_algorithm  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
MODELS = ['resnet50', 'effnet_b0', 'mobilenet_v2', 'deit_tiny', 'yolov8_n']


def family_options(name: str, size: int, step: int) -> dict:
    options = {'model.mutator.parse_cfg.demo_input': (1, 3, size, size),
               'model.mutator.channel_unit_cfg.default_args.step': step}
    if name == 'deit_tiny':  # the position embedding of a size x size input
        options['model.architecture.backbone.img_size'] = size
    return options


def searched_model(cfg, ratio: float, seed: int, lr: float = 1e-2, max_steps: int = 400):
    """The search model with random importance, moved by the resource loss to ``ratio`` of
    the supernet's MACs (then the two-sided loss of the width-only epochs)."""
    torch.manual_seed(seed)
    model = build_search_model(cfg).eval()
    random_importance(model, seed)
    target = ratio * model.supernet_resource('macs')
    lambda_resource = resource_hook_cfg(cfg).get('lambda_resource', 1.0)
    descend_to_target(model, target, lambda_resource, lr, max_steps)
    match_target(model, lr / 10, 50)
    return model


def prepare(name: str, model: torch.nn.Module, shape, work: str, threads: int) -> dict:
    """The model in eval mode, its onnxruntime session (checked at batch 1) and its MACs."""
    _, ort = require_onnx()
    model = model.eval()
    path = osp.join(work, f'{name}.onnx')
    trace_to_onnx(model, path, shape)
    diff = compare_with_onnxruntime(NetworkOutputs(model).eval(), path, shape, (1, ))[1]
    assert diff <= 1e-4, f'{name}: onnxruntime differs from PyTorch by {diff:.3g}'
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    return dict(model=model, session=session)


def time_models(models: dict, shape, batches, repeats: int) -> dict:
    """(name, runtime, batch) -> median seconds; the models alternate within each repeat."""
    times = {}
    for batch in batches:
        x = torch.randn((batch, *shape[1:]), generator=torch.Generator().manual_seed(batch))
        feed = x.numpy()
        for runtime in ('pytorch', 'onnxruntime'):
            runs = {name: [] for name in models}
            for repeat in range(repeats + 1):  # the first round warms up
                for name, entry in models.items():
                    start = time.perf_counter()
                    if runtime == 'pytorch':
                        with torch.no_grad():
                            entry['model'](x, mode='tensor')
                    else:
                        entry['session'].run(None, {'input': feed})
                    if repeat:
                        runs[name].append(time.perf_counter() - start)
            for name, seconds in runs.items():
                times[name, runtime, batch] = statistics.median(seconds)
    return times


def measure(name: str, args) -> list:
    size = args.yolo_size if name == 'yolov8_n' else args.size
    shape = [1, 3, size, size]
    config = osp.join(REPO, 'configs', 'dms', f'{name}.py')
    rows, models, macs = [], {}, {}
    with tempfile.TemporaryDirectory() as work:
        for step in args.steps:
            cfg = load_config(config, family_options(name, size, step))
            dms = searched_model(cfg, args.ratio, args.seed)
            if not models:
                macs['supernet'] = dms.supernet_resource('macs')
                models['supernet'] = prepare('supernet', build_architecture(cfg), shape, work,
                                             args.threads)
            subnet = subnet_from_algorithm(dms)
            macs[f'DMS, step {step}'] = subnet['macs']
            models[f'DMS, step {step}'] = prepare(
                f'dms_{step}', static_subnet(dms, cfg, subnet), shape, work, args.threads)
            # the same search model, every width kept by the same fraction, full depth
            try:
                uniform_structure(dms, subnet['macs'])
            except ValueError:  # steps too coarse for 2%: the closest fraction stays set
                pass
            subnet = subnet_from_algorithm(dms)
            macs[f'uniform, step {step}'] = subnet['macs']
            models[f'uniform, step {step}'] = prepare(
                f'uniform_{step}', static_subnet(dms, cfg, subnet), shape, work, args.threads)
        times = time_models(models, shape, args.batches, args.repeats)
    for model in models:
        row = dict(family=name, size=size, model=model, macs=macs[model],
                   macs_ratio=macs['supernet'] / macs[model])
        for key in times:
            if key[0] == model:
                row[key[1:]] = times[key]
                row['speedup', *key[1:]] = times[('supernet', *key[1:])] / times[key]
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', default=MODELS, choices=MODELS)
    parser.add_argument('--size', type=int, default=160, help='classifiers: input size')
    parser.add_argument('--yolo-size', type=int, default=320, help='YOLOv8: input size')
    parser.add_argument('--ratio', type=float, default=0.5,
                        help="DMS target: this fraction of the supernet's MACs")
    parser.add_argument('--steps', type=int, nargs='+', default=[1, 8],
                        help='channel steps of the width mutables')
    parser.add_argument('--batches', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--threads', type=int, default=2, help='intra-op threads')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    require_onnx()
    MMLogger.get_instance('bench_latency', log_level='WARNING')  # no search-space summaries

    rows = []
    for name in args.models:
        start = time.perf_counter()
        family = measure(name, args)
        rows += family
        print(f'{name}: {time.perf_counter() - start:.0f} s', flush=True)

    print(f'\nmedian of {args.repeats} forwards after 1 warm-up, models alternating; '
          f'{args.threads} intra-op threads; ms per batch; speed-up = supernet latency / '
          'model latency; MACs ratio = supernet MACs / model MACs (the ideal speed-up)\n')
    cols = [(runtime, batch) for runtime in ('pytorch', 'onnxruntime') for batch in args.batches]
    header = ' | '.join(f"{'PyTorch' if r == 'pytorch' else 'ORT'} b{b} ms (speed-up)"
                        for r, b in cols)
    print(f'| config | input | model | MACs (G) | MACs ratio | {header} |')
    print('|---|---|---|---|---|' + '---|' * len(cols))
    for row in rows:
        cells = ' | '.join(f"{1e3 * row[c]:.1f} ({row[('speedup', *c)]:.2f}×)" for c in cols)
        print(f"| `{row['family']}` | {row['size']}² | {row['model']} | {row['macs'] / 1e9:.3f} "
              f"| {row['macs_ratio']:.2f}× | {cells} |")


if __name__ == '__main__':
    main()
