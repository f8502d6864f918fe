# Copyright (c) mmdms contributors. All rights reserved.
"""Cost of one DMS search step against one plain training step of the same supernet.

``python benchmarks/bench_search_overhead.py [--models resnet50 deit_tiny ...] [--batch 8]
[--size 224] [--yolo-size 320] [--repeats 7] [--warmup 2] [--cfg-options KEY=VALUE ...]``

For each search config in ``configs/dms/`` two models are built with the same weights:

* **DMS**: the search model of the config (``DMS``: masked supernet, resource estimator, with
  the config's ``resource_value``) and the config's optimiser (structure parameters in their own
  group). One step is what a Runner iteration does: ``model.train_step`` (forward of the masked
  supernet, task loss + ``loss_resource``, backward, optimiser step), then the config's
  ``DMSImportanceHook`` (``sync_importance``) and ``ResourceLossHook`` ``after_train_iter``. The
  hook is in the last epoch of the target's decay (``r_t`` = the config's final target, well
  below the supernet's cost), so ``loss_resource > 0`` (checked).
* **plain**: the config's architecture without DMS (``mmdms.apis.build_architecture``) and the
  family's own optimiser (the config's, without the ``dms_ratio`` key or the DMS constructor);
  one ``model.train_step``.

The two steps alternate in one process; each figure is the median of ``--repeats`` steps after
``--warmup`` steps of each. **Paired** ratios are the median (and quartiles) of the ratios of a
DMS step and the plain step run right after it: on a shared machine the same step's time
drifts by tens of percent within a minute, and the two steps of a pair share the conditions.
The same synthetic batch is used throughout (classifiers: random images and labels; YOLOv8:
random images with two boxes each, at ``--yolo-size``). The per-phase times come from timers
wrapped around the estimator, ``optim_wrapper.backward`` / ``step`` / ``zero_grad`` and the
hooks of the same steps; ``forward`` is the rest of ``train_step`` (data preprocessing, forward,
loss parsing).

**Forward + backward alone** (the optimiser, the hooks and ``zero_grad`` excluded) is measured
in its own alternating loop: data preprocessing, the loss (for DMS with ``loss_resource``, so
the estimator is in), ``backward``; the gradients are dropped outside the timed region.

**The allocator** (``--allocator keep``): the script runs itself again with glibc told to keep
freed memory in the process (:data:`KEEP_FREED`). Under glibc's defaults every tensor above its
mmap threshold (at most 32 MiB) is a fresh mapping and the heap's top is trimmed, so each step
faults part of its memory in anew (the kernel zeroing every page), and the count differs between
the two steps; jemalloc or tcmalloc (PyTorch's CPU tuning guide) behave like ``keep``.

**Operator census** (``--census``): the aten operators one forward + backward alone runs, and
the elements they write (views write none), counted for the DMS and the plain model: what a DMS
step adds, independent of the machine's clock. Extra work that grows with the input would show
here as activation-sized elements.

**Peak memory** (``--memory``): the script runs itself again with glibc's
``MALLOC_MMAP_THRESHOLD_`` at 128 KiB, so that every activation-sized tensor is its own mapping,
returned to the system when freed; the peak resident set of a step (``VmHWM``, reset through
``/proc/self/clear_refs`` before it) minus the resident set when it starts is then the step's
own peak. Linux only. Prints markdown tables.
"""
import argparse
import copy
import os
import os.path as osp
import resource
import sys
import statistics
import time
from collections import Counter, defaultdict
from types import SimpleNamespace

import torch
from mmengine.config import DictAction
from mmengine.logging import MessageHub
from mmengine.optim import build_optim_wrapper
from mmengine.registry import HOOKS, DefaultScope
from torch.utils._python_dispatch import TorchDispatchMode

import mmdms  # noqa: F401
from mmdms.apis import build_architecture, build_search_model, load_config

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
MODELS = ['resnet50', 'deit_tiny', 'effnet_b0', 'mobilenet_v2', 'yolov8_n']
#: glibc's threshold above which an allocation is its own mapping (``--memory``)
MMAP_THRESHOLD = 128 * 1024
#: glibc settings (``--allocator keep``) under which freed memory stays in the process: no
#: ``mmap`` allocations, no trimming of the heap's top (64 GiB before glibc would trim)
KEEP_FREED = dict(MALLOC_MMAP_MAX_='0', MALLOC_TRIM_THRESHOLD_=str(64 * 2**30))
SUPERNETS = dict(resnet50='ResNet-152', deit_tiny='DeiT-S, 16 layers',
                 effnet_b0='EfficientNet-B4', mobilenet_v2='MobileNetV2 1.5x wide, 2x deep',
                 yolov8_n='YOLOv8 d0.5 w0.5')


def now() -> tuple:
    """(wall, CPU of the process over all its threads) in seconds. The CPU clock does not count
    the time other jobs on a shared machine take from this one."""
    return time.perf_counter(), time.process_time()


def minor_faults() -> int:
    """The process's minor page faults so far (pages it touched for the first time since the
    allocator got them from the system)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def since(start: tuple) -> tuple:
    wall, cpu = now()
    return wall - start[0], cpu - start[1]


class PhaseTimer:
    """Accumulates (wall, CPU) time per phase name within one step."""

    def __init__(self) -> None:
        self.times = defaultdict(lambda: (0.0, 0.0))

    def wrap(self, obj, attr: str, phase) -> None:
        """Time every call of ``obj.attr`` under ``phase`` (a name, or ``fn(*args, **kw)``)."""
        original = getattr(obj, attr)

        def timed(*args, **kwargs):
            start = now()
            try:
                return original(*args, **kwargs)
            finally:
                key = phase(*args, **kwargs) if callable(phase) else phase
                self.times[key] = tuple(a + b for a, b in zip(self.times[key], since(start)))

        setattr(obj, attr, timed)

    def pop(self) -> dict:
        times, self.times = dict(self.times), defaultdict(lambda: (0.0, 0.0))
        return times


def synthetic_batch(name: str, batch: int, size: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
    if name.startswith('yolov8'):  # mmyolo's collated format: rows image, class, x1, y1, x2, y2
        rows = []
        for i in range(batch):
            for j in range(2):
                x1, y1 = (torch.rand(2, generator=g) * size * 0.6).tolist()
                w, h = (torch.rand(2, generator=g) * size * 0.3 + size * 0.05).tolist()
                rows.append([i, (i + j) % 80, x1, y1, x1 + w, y1 + h])
        metas = [dict(batch_input_shape=(size, size), img_shape=(size, size))] * batch
        return dict(inputs=images, data_samples=dict(bboxes_labels=torch.tensor(rows),
                                                     img_metas=metas))
    from mmpretrain.structures import DataSample
    labels = torch.randint(0, 1000, (batch, ), generator=g)
    return dict(inputs=list(images),
                data_samples=[DataSample().set_gt_label(int(i)) for i in labels])


def plain_optim_cfg(cfg) -> dict:
    """The config's optimiser without the DMS pieces: the family's own recipe."""
    optim = copy.deepcopy(cfg.optim_wrapper)
    paramwise = optim.get('paramwise_cfg')
    if paramwise is not None:
        if optim.get('constructor') == 'DMSOptimWrapperConstructor':
            optim['constructor'] = paramwise.pop('base_constructor',
                                                 'DefaultOptimWrapperConstructor')
        keys = paramwise.get('custom_keys', {})
        keys.pop('dms_ratio', None)
        if not keys:
            paramwise.pop('custom_keys', None)
        if not paramwise:
            optim.pop('paramwise_cfg')
    return optim


class Case:
    """The DMS search step and the plain step of one config."""

    def __init__(self, name: str, batch: int, size: int, trace_size=None,
                 cfg_options=None) -> None:
        self.name = name
        options = dict(cfg_options or {})
        if trace_size is not None:
            options['model.mutator.parse_cfg.demo_input'] = (1, 3, trace_size, trace_size)
        self.cfg = cfg = load_config(osp.join(REPO, 'configs', 'dms', f'{name}.py'), options)
        torch.manual_seed(0)
        self.dms = build_search_model(cfg).train()
        self.plain = build_architecture(cfg).train()
        self.plain.load_state_dict(self.dms.architecture.state_dict())  # same keys and weights
        with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
            self.dms_optim = build_optim_wrapper(self.dms, cfg.optim_wrapper)
            self.plain_optim = build_optim_wrapper(self.plain, plain_optim_cfg(cfg))
            hooks = {h['type']: HOOKS.build(copy.deepcopy(h)) for h in cfg.custom_hooks
                     if h['type'] in ('DMSImportanceHook', 'ResourceLossHook')}
        self.importance_hook = hooks['DMSImportanceHook']
        self.resource_hook = hooks['ResourceLossHook']
        self.runner = SimpleNamespace(
            model=self.dms, epoch=0, iter=0, hooks=[], message_hub=MessageHub.get_instance(
                f'bench_search_overhead_{name}'),
            train_loop=SimpleNamespace(max_epochs=cfg.train_cfg.max_epochs))
        self.resource_hook.before_train(self.runner)
        # the last epoch of the target's decay: r_t is the config's final target, far enough
        # below the supernet that loss_resource stays positive over the measured steps
        self.runner.epoch = self.resource_hook.decay_steps - 1
        self.resource_hook.before_train_epoch(self.runner)
        self.data = synthetic_batch(name, batch, size)

        self.timer = PhaseTimer()
        self.timer.wrap(self.dms.estimator, 'estimate',
                        lambda resource='macs', hard=False, full=False:
                        'estimator hard' if hard else 'estimator soft')
        for optim, tag in ((self.dms_optim, 'dms'), (self.plain_optim, 'plain')):
            for attr in ('backward', 'step', 'zero_grad'):
                self.timer.wrap(optim, attr, attr)
        self.timer.wrap(self.importance_hook, 'after_train_iter', 'importance update')
        self.timer.wrap(self.resource_hook, 'after_train_iter', 'ResourceLossHook logging')
        self.resource_positive = []

    def dms_step(self) -> dict:
        start = now()
        log = self.dms.train_step(self.data, self.dms_optim)
        self.importance_hook.after_train_iter(self.runner, 0, self.data, log)
        self.resource_hook.after_train_iter(self.runner, 0, self.data, log)
        total = since(start)
        self.resource_positive.append(log['loss_resource'].item() > 0)
        return self._phases(total)

    def plain_step(self) -> dict:
        start = now()
        self.plain.train_step(self.data, self.plain_optim)
        return self._phases(since(start))

    def forward_backward(self, dms: bool) -> tuple:
        """(wall, CPU) of data preprocessing, the loss and its backward alone."""
        model, optim = (self.dms, self.dms_optim) if dms else (self.plain, self.plain_optim)
        start = now()
        data = model.data_preprocessor(self.data, True)
        loss, _ = model.parse_losses(model._run_forward(data, mode='loss'))
        loss.backward()
        elapsed = since(start)
        self.timer.pop()  # the estimator's timers ran inside; they belong to no step here
        model.zero_grad(set_to_none=True)
        if dms:  # drop the statistics this backward recorded, as after an importance update
            for mutable in model.dms_mutables():
                mutable.pop_mask_grad_statistic()
        return elapsed

    def _phases(self, total: tuple) -> dict:
        """Per phase: (wall, CPU); ``forward`` is the rest of the step."""
        phases = self.timer.pop()
        timed = [phases.get(k, (0.0, 0.0)) for k in TIMED_PHASES]
        phases['forward'] = tuple(t - sum(p[i] for p in timed) for i, t in enumerate(total))
        phases['total'] = total
        return phases

    def estimator_backward(self, repeats: int) -> tuple:
        """Median (wall, CPU) of the soft estimate's backward alone (inside the step it is part
        of ``backward``)."""
        times = []
        estimate = type(self.dms.estimator).estimate  # not the timed wrapper
        for _ in range(repeats):
            r_c = estimate(self.dms.estimator, self.dms.resource_type)
            start = now()
            r_c.backward()
            times.append(since(start))
        self.dms.zero_grad()
        for mutable in self.dms.dms_mutables():  # drop the statistics this backward recorded
            mutable.pop_mask_grad_statistic()
        return tuple(statistics.median(t[i] for t in times) for i in range(2))


def build_case(name: str, args) -> tuple:
    """(the :class:`Case` of config ``name`` at the command line's batch and size, the size)."""
    yolo = name.startswith('yolov8')
    size = args.yolo_size if yolo else args.size
    # YOLOv8 is traced (and its MACs counted) at the config's 640 x 640, the resolution of its
    # target; it trains on --yolo-size images
    return Case(name, args.batch, size, trace_size=None if yolo else size,
                cfg_options=args.cfg_options), size


def _status_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def peak_memory_mib(fn) -> float:
    """The peak resident set while ``fn()`` runs, above the resident set when it starts."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # resets VmHWM to the current resident set
    start = _status_kib('VmRSS')
    fn()
    return (_status_kib('VmHWM') - start) / 1024


def measure_memory(args) -> None:
    print('Peak memory above the resident set at the start of the step (MiB), median of '
          f'{args.repeats} steps after one warm-up step each; glibc '
          f'MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}\n')
    print('| config (supernet) | input | plain step | DMS step | DMS / plain | plain fwd+bwd | '
          'DMS fwd+bwd | DMS / plain |')
    print('|---|---|---|---|---|---|---|---|')
    for name in args.models:
        case, size = build_case(name, args)
        runs = dict(plain=case.plain_step, dms=case.dms_step,
                    plain_fb=lambda: case.forward_backward(False),
                    dms_fb=lambda: case.forward_backward(True))
        peaks = {k: [] for k in runs}
        for i in range(args.repeats + 1):
            for key, fn in runs.items():
                peak = peak_memory_mib(fn)
                if i:
                    peaks[key].append(peak)
        m = {k: statistics.median(v) for k, v in peaks.items()}
        print(f'| `{name}.py` ({SUPERNETS[name]}) | {args.batch}×3×{size}² | {m["plain"]:.0f} | '
              f'{m["dms"]:.0f} | {m["dms"] / m["plain"]:.2f}× | {m["plain_fb"]:.0f} | '
              f'{m["dms_fb"]:.0f} | {m["dms_fb"] / m["plain_fb"]:.2f}× |', flush=True)
        del case


#: Phases timed by wrappers; ``forward`` is the step minus these.
TIMED_PHASES = ('estimator soft', 'estimator hard', 'backward', 'step', 'zero_grad',
                'importance update', 'ResourceLossHook logging')
PHASES = ('forward', 'estimator soft', 'estimator hard', 'backward', 'estimator soft backward',
          'step', 'zero_grad', 'importance update', 'ResourceLossHook logging', 'total',
          'forward + backward alone')


class OpCensus(TorchDispatchMode):
    """While active: per aten operator, its calls and the elements they write (a view writes
    none; an in-place operator writes its input's)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls, self.elements = Counter(), Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func)
        self.calls[name] += 1
        if not func.is_view:
            outs = out if isinstance(out, (tuple, list)) else (out, )
            self.elements[name] += sum(o.numel() for o in outs if isinstance(o, torch.Tensor))
        return out


def census(case: Case, dms: bool) -> OpCensus:
    """The operators of one forward + backward alone (after one uncounted, warming caches)."""
    case.forward_backward(dms)
    with OpCensus() as counted:
        case.forward_backward(dms)
    return counted


def print_census(args) -> None:
    print('| config (supernet) | input | aten calls, plain / DMS | elements written (M), plain / '
          'DMS | DMS adds | largest additions (M elements) |')
    print('|---|---|---|---|---|---|')
    for name in args.models:
        case, size = build_case(name, args)
        dms, plain = census(case, True), census(case, False)
        calls = [sum(c.calls.values()) for c in (plain, dms)]
        elements = [sum(c.elements.values()) / 1e6 for c in (plain, dms)]
        extra = {op: (dms.elements[op] - plain.elements[op]) / 1e6 for op in dms.elements}
        largest = ', '.join(f'`{op}` {e:.1f}' for op, e in
                            sorted(extra.items(), key=lambda kv: -kv[1])[:3] if e > 0.05)
        print(f'| `{name}.py` ({SUPERNETS[name]}) | {args.batch}×3×{size}² | {calls[0]:,} / '
              f'{calls[1]:,} | {elements[0]:,.0f} / {elements[1]:,.0f} | +{calls[1] - calls[0]:,}'
              f' calls, +{elements[1] - elements[0]:.1f} M elements '
              f'(+{100 * (elements[1] / elements[0] - 1):.1f}%) | {largest} |', flush=True)
        del case


def paired_ratios(dms: list, plain: list) -> tuple:
    """Median and quartiles of the ratios of the DMS and plain steps run next to each other.

    On a shared machine the speed of the same step drifts by tens of percent within a minute;
    the two steps of a pair see nearly the same conditions, so their ratio is steadier than
    the ratio of the two medians."""
    ratios = [d / p for d, p in zip(dms, plain)]
    if len(ratios) < 2:
        return (ratios[0], ratios[0], ratios[0])
    q1, q2, q3 = statistics.quantiles(ratios, n=4)
    return (statistics.median(ratios), q1, q3)


def fmt_paired(paired: tuple) -> str:
    return f'{paired[0]:.3f}× [{paired[1]:.2f}–{paired[2]:.2f}]'


def median_phases(steps: list) -> dict:
    keys = {k for s in steps for k in s}
    return {k: tuple(statistics.median(s.get(k, (0.0, 0.0))[i] for s in steps)
                     for i in range(2)) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--models', nargs='+', default=MODELS, choices=MODELS)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--yolo-size', type=int, default=320)
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='overrides of every search config, e.g. '
                        'model.mutator.fold_norm_masks=False')
    parser.add_argument('--clock', choices=('wall', 'cpu'), default='wall',
                        help='the clock of the per-phase table (the summary shows both)')
    parser.add_argument('--memory', action='store_true',
                        help='measure the peak memory of the steps instead of their time')
    parser.add_argument('--allocator', choices=('glibc', 'keep'), default='glibc',
                        help="glibc: glibc's defaults; keep: glibc keeps freed memory for the "
                        'next step (%s)' % ' '.join(f'{k}={v}' for k, v in KEEP_FREED.items()))
    parser.add_argument('--census', action='store_true',
                        help='count the operators of one forward + backward instead of timing')
    args = parser.parse_args()
    if args.census:
        print_census(args)
        return
    if args.memory:
        if os.environ.get('MALLOC_MMAP_THRESHOLD_') != str(MMAP_THRESHOLD):
            env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD))
            os.execve(sys.executable, [sys.executable] + sys.argv, env)
        measure_memory(args)
        return
    if args.allocator == 'keep' and any(os.environ.get(k) != v for k, v in KEEP_FREED.items()):
        os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, **KEEP_FREED))
    print('allocator: ' + (' '.join(f'{k}={os.environ[k]}' for k in KEEP_FREED)
                           if args.allocator == 'keep' else "glibc's defaults"))
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}; '
          f'median of {args.repeats} steps after {args.warmup} warm-up steps, alternating '
          f'DMS and plain')
    results = []
    for name in args.models:
        case, size = build_case(name, args)
        dms_steps, plain_steps, dms_fb, plain_fb = [], [], [], []
        faults = dict(dms=[], plain=[])
        for i in range(args.warmup + args.repeats):
            before = minor_faults()
            d = case.dms_step()
            middle = minor_faults()
            p = case.plain_step()
            if i >= args.warmup:
                dms_steps.append(d)
                plain_steps.append(p)
                faults['dms'].append(middle - before)
                faults['plain'].append(minor_faults() - middle)
        for i in range(args.warmup + args.repeats):
            d, p = case.forward_backward(True), case.forward_backward(False)
            if i >= args.warmup:
                dms_fb.append(d)
                plain_fb.append(p)
        dms, plain = median_phases(dms_steps), median_phases(plain_steps)
        dms['forward + backward alone'] = tuple(statistics.median(t[i] for t in dms_fb)
                                                for i in range(2))
        plain['forward + backward alone'] = tuple(statistics.median(t[i] for t in plain_fb)
                                                  for i in range(2))
        dms['estimator soft backward'] = case.estimator_backward(args.repeats)
        dms['paired step'] = paired_ratios([d['total'][0] for d in dms_steps],
                                           [p['total'][0] for p in plain_steps])
        dms['paired fwd+bwd'] = paired_ratios([d[0] for d in dms_fb], [p[0] for p in plain_fb])
        positive = sum(case.resource_positive[args.warmup:])
        results.append((name, size, dms, plain, positive, args.repeats))
        fb_d, fb_p = dms['forward + backward alone'], plain['forward + backward alone']
        print(f'{name}: DMS {dms["total"][0]:.3f} s, plain {plain["total"][0]:.3f} s, ratio '
              f'{dms["total"][0] / plain["total"][0]:.3f} (CPU time: '
              f'{dms["total"][1] / plain["total"][1]:.3f}; paired: '
              f'{fmt_paired(dms["paired step"])}); forward + backward alone: ratio '
              f'{fb_d[0] / fb_p[0]:.3f} (CPU time: {fb_d[1] / fb_p[1]:.3f}; paired: '
              f'{fmt_paired(dms["paired fwd+bwd"])}); page faults per step: DMS '
              f'{statistics.median(faults["dms"]):.0f}, plain '
              f'{statistics.median(faults["plain"]):.0f}', flush=True)
        del case

    print('\n| config (supernet) | input | plain step (s) | DMS step (s) | DMS / plain | '
          'CPU time DMS / plain | paired DMS / plain [quartiles] | fwd+bwd alone: plain / '
          'DMS (s) | DMS / plain | CPU time DMS / plain | paired DMS / plain [quartiles] |')
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    for name, size, dms, plain, _, _ in results:
        (pw, pc), (dw, dc) = plain['total'], dms['total']
        (fpw, fpc), (fdw, fdc) = plain['forward + backward alone'], \
            dms['forward + backward alone']
        print(f'| `{name}.py` ({SUPERNETS[name]}) | {args.batch}×3×{size}² | {pw:.2f} | '
              f'{dw:.2f} | {dw / pw:.3f}× | {dc / pc:.3f}× | '
              f'**{fmt_paired(dms["paired step"])}** | {fpw:.2f} / {fdw:.2f} | '
              f'{fdw / fpw:.3f}× | {fdc / fpc:.3f}× | **{fmt_paired(dms["paired fwd+bwd"])}** |')
    index = 0 if args.clock == 'wall' else 1
    print(f'\nPer phase, median {args.clock} ms, plain / DMS ("estimator soft backward" is timed '
          'alone and is part of the DMS "backward"):\n')
    print('| phase | ' + ' | '.join(r[0] for r in results) + ' |')
    print('|---|' + '---|' * len(results))
    for phase in PHASES:
        cells = []
        for _, _, dms, plain, _, _ in results:
            d = dms.get(phase, (0.0, 0.0))[index] * 1e3
            p = plain.get(phase, (None, None))[index]
            cells.append(f'– / {d:.0f}' if p is None else f'{p * 1e3:.0f} / {d:.0f}')
        print(f'| {phase} | ' + ' | '.join(cells) + ' |')
    print('\nsteps with loss_resource > 0: ' +
          ', '.join(f'{r[0]} {r[4]}/{r[5]}' for r in results))


if __name__ == '__main__':
    main()
