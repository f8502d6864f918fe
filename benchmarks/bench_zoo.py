# Copyright (c) mmdms contributors. All rights reserved.
"""The zoo: does the default ``DMSMutator`` search and export every model family exactly?

``python benchmarks/bench_zoo.py [--out benchmarks/results/zoo.jsonl] [--families ResNet YOLOv8
...] [--timeout 120] [--list] [--table]``

Models: every supervised image-classification architecture family of the installed mmpretrain
(``mmpretrain.list_models(task='Image Classification')`` grouped by the model index's
collection, the variant with the fewest FLOPs; families whose every config is a
self-supervised benchmark under ``*/benchmarks/`` and zero-shot CLIP are left out), every
mmyolo detector family (YOLOv5, v6, v7, v8, X, RTMDet, PPYOLOE+) and mmdet's RetinaNet, FCOS,
Faster R-CNN, Mask R-CNN, RTMDet and DETR. Each model runs in its own process, with a timeout,
through these stages (each timed):

1. ``build``: the search model of the model's config wrapped as ``configs/dms/*.py`` wrap
   theirs (``DMS`` with the mutator of ``configs/dms/_base_/dms_search.py``, pretrained weights
   stripped) at a small input (``--cls-size`` / ``--det-size``) when the plain model runs on
   it, else the config's own test input size;
2. ``space``: width groups, depth stages, attentions and the share of conv / linear weights
   searched (``SearchSpace.weight_coverage``);
3. ``gradient``: random importances, a random structure, one forward of the soft-masked model
   and a backward of a random projection of its outputs: how many ratios get a non-zero
   gradient;
4. ``export``: ``subnet_from_algorithm`` and ``static_subnet`` (``prune_to_subnet``);
5. ``outputs``: ``hard_mask_difference``, the static model vs the hard-masked search model;
6. ``macs``: mmengine's ``FlopAnalyzer`` (with attention, ``mmdms.utils.count_macs``) on the
   static model vs ``subnet.json``'s MACs, and its parameter count vs ``subnet.json``'s.

Every finished model appends one JSON line to ``--out`` at once, stamped with the code's commit
(``+dirty`` with uncommitted changes), the date and the machine; a rerun skips the families
already there (``--redo`` reruns them; the last line of a family counts). The default results
file is kept in git, so the table of ``docs/zoo.md`` is rebuilt from it anywhere with
``--table``.
"""
import argparse
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time
import traceback
import warnings
from collections import Counter, defaultdict
from typing import Dict, List, Optional

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: The zoo's results, kept in the repository.
RESULTS = osp.join(REPO, 'benchmarks', 'results', 'zoo.jsonl')
STAGES = ('build', 'space', 'gradient', 'export', 'outputs', 'macs')
#: Exact enough: the export's own tolerance and the issue's MACs bound.
OUTPUT_TOL = 1e-4
MACS_TOL = 1e-3
#: Collections of the model index that are zero-shot, not supervised classifiers.
NOT_SUPERVISED = ('ChineseCLIP', )

DETECTORS = [
    # (family, package, config relative to the package's configs)
    ('YOLOv5', 'mmyolo', 'yolov5/yolov5_n-v61_syncbn_fast_8xb16-300e_coco.py'),
    ('YOLOv6', 'mmyolo', 'yolov6/yolov6_n_syncbn_fast_8xb32-400e_coco.py'),
    ('YOLOv7', 'mmyolo', 'yolov7/yolov7_tiny_syncbn_fast_8x16b-300e_coco.py'),
    ('YOLOv8', 'mmyolo', 'yolov8/yolov8_n_syncbn_fast_8xb16-500e_coco.py'),
    ('YOLOX', 'mmyolo', 'yolox/yolox_nano_fast_8xb8-300e_coco.py'),
    ('RTMDet (mmyolo)', 'mmyolo', 'rtmdet/rtmdet_tiny_syncbn_fast_8xb32-300e_coco.py'),
    ('PPYOLOE+', 'mmyolo', 'ppyoloe/ppyoloe_plus_s_fast_8xb8-80e_coco.py'),
    ('RetinaNet', 'mmdet', 'retinanet/retinanet_r18_fpn_1x_coco.py'),
    ('FCOS', 'mmdet',
     'fcos/fcos_r18_fpn_gn-head-center-normbbox-centeronreg-giou_8xb8-amp-lsj-200e_coco.py'),
    ('Faster R-CNN', 'mmdet', 'faster_rcnn/faster-rcnn_r18_fpn_8xb8-amp-lsj-200e_coco.py'),
    ('Mask R-CNN', 'mmdet', 'mask_rcnn/mask-rcnn_r18_fpn_8xb8-amp-lsj-200e_coco.py'),
    ('RTMDet (mmdet)', 'mmdet', 'rtmdet/rtmdet_tiny_8xb32-300e_coco.py'),
    ('DETR', 'mmdet', 'detr/detr_r18_8xb2-500e_coco.py'),
]


# the zoo --------------------------------------------------------------------------------------
def _package_configs(package: str) -> str:
    module = __import__(package)
    return osp.join(osp.dirname(module.__file__), '.mim', 'configs')


def classifier_families() -> List[Dict]:
    """One entry per supervised classification family of mmpretrain's model index: its
    smallest variant (fewest FLOPs, then parameters)."""
    import mmpretrain
    from mmpretrain.apis.model import ModelHub
    configs = _package_configs('mmpretrain')
    families = defaultdict(list)
    ModelHub._register_mmpretrain_models()
    for name in mmpretrain.list_models(task='Image Classification'):
        model = ModelHub._models_dict[name]  # the index entry (``get`` loads the config)
        if model.in_collection in NOT_SUPERVISED:
            continue
        config = osp.relpath(model.config, configs)
        if '/benchmarks/' in f'/{config}':  # a self-supervised method's evaluation
            continue
        meta = model.metadata
        families[model.in_collection].append(
            ((meta.flops or float('inf'), meta.parameters or float('inf'), name), config))
    return [dict(family=family, package='mmpretrain', model=min(v)[0][2], config=min(v)[1],
                 task='cls') for family, v in sorted(families.items())]


def zoo() -> List[Dict]:
    """Every family of the zoo, classifiers first."""
    return classifier_families() + [
        dict(family=f, package=p, model=osp.basename(c)[:-3], config=c, task='det')
        for f, p, c in DETECTORS]


# one model (in its worker process) --------------------------------------------------------------
def _stage(name: str) -> None:
    print(f'@stage {name} {time.time()}', flush=True)


def _config_input_size(cfg, task: str) -> int:
    """The side of the test input of an mmpretrain / mmdet / mmyolo config."""
    for key in ('img_scale', 'input_size'):
        value = cfg.get(key)
        if isinstance(value, int):
            return value
        if isinstance(value, (tuple, list)) and value and isinstance(value[0], int):
            return max(value)
    pipeline = cfg.get('test_pipeline') or cfg.get('test_dataloader', {}).get(
        'dataset', {}).get('pipeline', [])
    # a classifier's input is its crop (the resize before it is larger), a detector's its resize
    for key in ('crop_size', 'scale', 'img_scale'):
        for step in pipeline:
            value = step.get(key) if isinstance(step, dict) else None
            if isinstance(value, int):
                return value
            if isinstance(value, (tuple, list)) and value and isinstance(value[0], int):
                return max(value) if task == 'det' else min(value)
    return 224 if task == 'cls' else 640


def search_config(entry: Dict, size: int):
    """The DMS search config of a zoo entry at input ``size``, as ``configs/dms/*.py`` build
    theirs: the model's config inherited, its architecture wrapped in ``DMS`` with the shared
    mutator."""
    from mmengine.config import Config

    from mmdms.apis.retrain_config import strip_pretrained
    base = Config.fromfile(osp.join(_package_configs(entry['package']), entry['config']))
    shared = Config.fromfile(osp.join(REPO, 'configs', 'dms', '_base_', 'dms_search.py'))
    architecture = strip_pretrained(base.model.to_dict())
    architecture['_scope_'] = entry['package']
    mutator = dict(shared.mutator.to_dict())
    mutator['parse_cfg'] = dict(mutator['parse_cfg'], demo_input=(1, 3, size, size))
    cfg = dict(default_scope=base.get('default_scope', entry['package']),
               model=dict(_scope_='mmrazor', type='DMS', architecture=architecture,
                          mutator=mutator, resource_value='hard'))
    if base.get('data_preprocessor') is not None:
        cfg['data_preprocessor'] = base.data_preprocessor.to_dict()
    return Config(cfg), _config_input_size(base, entry['task'])


def _tensors(out) -> list:
    import torch
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


def _runs_at(cfg, size: int) -> bool:
    """Whether the plain architecture of ``cfg`` runs on a ``size`` x ``size`` input."""
    import torch

    from mmdms.apis import build_architecture
    from mmdms.models.adapters.network_forward import network_forward
    try:
        model = build_architecture(cfg).eval()
        with torch.no_grad():  # the forward mmdms counts (a detector's with data samples)
            network_forward(model, torch.zeros(1, 3, size, size))
        return True
    except Exception:
        return False


def run_model(entry: Dict, small: int, seed: int = 0) -> Dict:
    """Every stage for one zoo entry; raises at the first stage that fails."""
    import torch

    import mmdms  # noqa: F401
    from mmdms.apis import (build_search_model, hard_mask_difference, set_random_structure,
                            static_subnet)
    from mmdms.structures import subnet_from_algorithm
    from mmdms.utils import count_macs, count_params

    result: Dict = dict(seconds={})
    cfg, config_size = search_config(entry, small)
    size = small
    if small != config_size and not _runs_at(cfg, small):
        size = config_size
        cfg, _ = search_config(entry, size)
    result['input'] = size
    print(f'@input {size}', flush=True)

    start = time.perf_counter()
    _stage('build')
    torch.manual_seed(seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        model = build_search_model(cfg).eval()
    result['seconds']['build'] = time.perf_counter() - start
    thin = [str(w.message) for w in caught if w.category.__name__ == 'ThinSearchSpaceWarning']
    if thin:  # the mutator's one warning: its first line and the reasons
        result['warning'] = ' '.join(line.strip() for line in thin[0].splitlines()[:3])[:600]

    _stage('space')
    space = model.space
    result.update(widths=len(space.widths), stages=len(space.stages),
                  attentions=len(space.attentions), coverage=space.weight_coverage,
                  unsearched=len(space.unsearched_layers),
                  supernet_macs=model.supernet_resource('macs'))

    start = time.perf_counter()
    _stage('gradient')
    g = torch.Generator().manual_seed(seed)
    set_random_structure(model, g)
    ratios = model.structure_parameters()
    x = torch.randn((1, 3, size, size), generator=g)
    outputs = [t for t in _tensors(model(x, mode='tensor')) if t.is_floating_point()]
    loss = sum((t * torch.randn(t.shape, generator=g)).sum() for t in outputs)
    grads = torch.autograd.grad(loss, ratios, allow_unused=True) if ratios else []
    result['ratios'] = len(ratios)
    result['ratios_with_gradient'] = sum(
        1 for gr in grads if gr is not None and bool((gr != 0).any()))
    result['seconds']['gradient'] = time.perf_counter() - start

    start = time.perf_counter()
    _stage('export')
    model.zero_grad(set_to_none=True)
    subnet = subnet_from_algorithm(model)
    static = static_subnet(model, cfg, subnet)
    result['seconds']['export'] = time.perf_counter() - start
    result.update(macs=subnet['macs'], params=subnet['params'])

    start = time.perf_counter()
    _stage('outputs')
    result['output_diff'] = hard_mask_difference(model, static, subnet['input_shape'], seed)
    result['seconds']['outputs'] = time.perf_counter() - start

    start = time.perf_counter()
    _stage('macs')
    counted = count_macs(static, subnet['input_shape'])
    result['flop_analyzer_macs'] = counted
    result['macs_gap'] = counted / subnet['macs'] - 1 if subnet['macs'] else float('inf')
    result['counted_params'] = count_params(static)
    result['seconds']['macs'] = time.perf_counter() - start
    return result


def worker(entry: Dict, small: int) -> None:
    """Run one entry and print its result as the last line (``@result {json}``)."""
    try:
        result = dict(run_model(entry, small), ok=True)
    except BaseException as e:  # noqa: B902  (reported, the process ends anyway)
        first = (str(e).strip().splitlines() or [''])[0]
        result = dict(ok=False, error=f'{type(e).__name__}: {first}'[:400],
                      traceback=traceback.format_exc()[-3000:])
    print('@result ' + json.dumps(result, default=float), flush=True)


# the driver -------------------------------------------------------------------------------------
def _last_stage(stdout: str) -> Optional[str]:
    stages = [line.split()[1] for line in stdout.splitlines() if line.startswith('@stage ')]
    return stages[-1] if stages else 'setup'


def run_isolated(entry: Dict, small: int, timeout: float) -> Dict:
    """``entry`` in a fresh process; its result, or the stage where it failed or timed out."""
    cmd = [sys.executable, osp.abspath(__file__), '--worker', json.dumps(entry),
           '--small', str(small)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ))
        stdout = proc.stdout
        lines = [line for line in stdout.splitlines() if line.startswith('@result ')]
        if lines:
            result = json.loads(lines[-1][len('@result '):])
        else:
            tail = (proc.stderr.strip().splitlines() or ['no output'])[-1]
            result = dict(ok=False, error=f'the process died (exit {proc.returncode}): '
                          f'{tail}'[:400])
    except subprocess.TimeoutExpired as e:
        stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or '')
        result = dict(ok=False, error=f'timed out after {timeout:.0f} s')
    result['stage'] = _last_stage(stdout) if not result['ok'] else 'done'
    sizes = [line.split()[1] for line in stdout.splitlines() if line.startswith('@input ')]
    if sizes and 'input' not in result:
        result['input'] = int(sizes[-1])
    result['wall_seconds'] = time.perf_counter() - start
    return dict(entry, **result)


def stamp() -> Dict:
    """Which code ran, when and where (``commit`` gets ``+dirty`` with uncommitted changes)."""
    import datetime
    import socket

    def git(*args: str) -> str:
        try:
            return subprocess.run(['git', *args], cwd=REPO, capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ''

    commit = git('rev-parse', '--short', 'HEAD') or 'unknown'
    if git('status', '--porcelain', '--untracked-files=no', '--', 'mmdms', 'benchmarks',
           'configs', ':(exclude)benchmarks/results'):
        commit += '+dirty'
    return dict(commit=commit, host=socket.gethostname(), cpus=os.cpu_count(),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))


def exact(row: Dict) -> bool:
    """A non-empty space, exported with equal outputs and MACs within :data:`MACS_TOL` of
    FlopAnalyzer's."""
    return bool(row.get('ok') and row.get('ratios', 0) > 0 and
                row.get('output_diff', 1) <= OUTPUT_TOL and
                abs(row.get('macs_gap', 1)) <= MACS_TOL)


def zoo_order(row: Dict):
    """The zoo's order of a row: classifiers by family name, then the detectors as listed
    (whatever order the rows were written in, e.g. by two processes side by side)."""
    detectors = [family for family, _, _ in DETECTORS]
    if row.get('task') == 'det' and row['family'] in detectors:
        return (1, detectors.index(row['family']), '')
    return (0, 0, row['family'])


def table(rows: List[Dict]) -> str:
    rows = sorted(rows, key=zoo_order)
    lines = ['| family | model | input | widths | stages | attentions | weights searched | '
             'ratios with a gradient | outputs (max rel. diff) | MACs vs FlopAnalyzer | '
             'params exact | exact | seconds (build / export / total) | failed at: why |',
             '|' + '---|' * 14]
    for r in rows:
        sec = r.get('seconds', {})
        fail = '' if r['ok'] else f"{r['stage']}: {r['error']}".replace('|', '\\|')
        if r.get('warning'):
            fail = (fail + ' ' if fail else '') + 'warned: thin space'
        elif r['ok'] and not r.get('ratios'):
            fail = 'empty search space, no warning'
        elif r['ok'] and not exact(r):
            fail = 'not exact'
        cov = f"{r['coverage']:.0%}" if 'coverage' in r else ''
        grad = f"{r['ratios_with_gradient']}/{r['ratios']}" if 'ratios' in r else ''
        diff = f"{r['output_diff']:.1e}" if 'output_diff' in r else ''
        gap = f"{r['macs_gap']:+.3%}" if 'macs_gap' in r else ''
        params = ('yes' if r['counted_params'] == r['params'] else
                  f"no ({r['params']} vs {r['counted_params']})") if 'counted_params' in r else ''
        times = (f"{sec['build']:.0f} / " if 'build' in sec else '– / ') + \
            (f"{sec['export']:.0f} / " if 'export' in sec else '– / ') + \
            f"{r['wall_seconds']:.0f}"
        lines.append(
            f"| {r['family']} | `{r['model']}` | {r.get('input', '')} | {r.get('widths', '')} "
            f"| {r.get('stages', '')} | {r.get('attentions', '')} | {cov} | {grad} | {diff} "
            f"| {gap} | {params} | {'yes' if exact(r) else 'no'} | {times} | {fail} |")
    return '\n'.join(lines)


def counts(rows: List[Dict]) -> str:
    n = len(rows)
    built = [r for r in rows if 'coverage' in r]
    exported = [r for r in rows if 'output_diff' in r]
    ok = [r for r in rows if exact(r)]
    full_cov = [r for r in built if r['coverage'] >= 0.9]
    thin = [r for r in built if r['coverage'] < 0.5]
    depth = [r for r in built if r['stages'] > 0]
    grads = [r for r in rows if 'ratios' in r and r['ratios'] == r['ratios_with_gradient']]
    return '\n'.join([
        f'- families: {n}',
        f'- search model built: {len(built)}',
        f'- every ratio gets a gradient: {len(grads)}',
        f'- exported (static model built and run): {len(exported)}',
        f'- **exact** (outputs within {OUTPUT_TOL:g}, MACs within {MACS_TOL:.1%} of '
        f'FlopAnalyzer): **{len(ok)} / {n}** ({len(ok) / max(n, 1):.0%})',
        f'- ≥ 90% of conv/linear weights searched: {len(full_cov)}; under 50%: {len(thin)}',
        f'- with at least one depth stage: {len(depth)}',
        '- rows by code commit: ' + ', '.join(
            f'{commit} ({count})' for commit, count in sorted(
                Counter(r.get('commit', 'not recorded') for r in rows).items())),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default=RESULTS, help='results, one JSON line per model')
    parser.add_argument('--families', nargs='+', help='only these families (names as --list)')
    parser.add_argument('--timeout', type=float, default=120,
                        help='seconds per model (all stages, imports included)')
    parser.add_argument('--cls-size', type=int, default=64,
                        help="classifiers' input side when the model runs on it")
    parser.add_argument('--det-size', type=int, default=256,
                        help="detectors' input side when the model runs on it")
    parser.add_argument('--redo', action='store_true', help='rerun families already in --out')
    parser.add_argument('--list', action='store_true', help='print the zoo and stop')
    parser.add_argument('--table', action='store_true', help='print the table of --out')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    parser.add_argument('--small', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker), args.small)
        return
    done = {}
    if osp.exists(args.out):
        with open(args.out) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    done[row['family']] = row
    if args.table:
        rows = list(done.values())
        print(table(rows) + '\n\n' + counts(rows))
        return
    import mmdms  # noqa: F401  (the torchvision shim before mmpretrain)
    entries = zoo()
    if args.list:
        for e in entries:
            print(f"{e['family']}: {e['package']} {e['config']}")
        return
    if args.families:
        unknown = set(args.families) - {e['family'] for e in entries}
        if unknown:
            parser.error(f'unknown families {sorted(unknown)}; see --list')
        entries = [e for e in entries if e['family'] in args.families]
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    # a SIGTERM (pkill) becomes SystemExit, on which subprocess.run kills the model's worker
    # process instead of leaving it running
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    for entry in entries:
        if entry['family'] in done and not args.redo:
            continue
        small = args.cls_size if entry['task'] == 'cls' else args.det_size
        row = dict(run_isolated(entry, small, args.timeout), timeout=args.timeout, **stamp())
        with open(args.out, 'a') as f:
            f.write(json.dumps(row, default=float) + '\n')
        state = 'exact' if exact(row) else (
            'ok' if row['ok'] else f"failed at {row['stage']}: {row['error']}")
        print(f"{entry['family']}: {state} ({row['wall_seconds']:.0f} s)", flush=True)


if __name__ == '__main__':
    main()
