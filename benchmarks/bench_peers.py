# Copyright (c) mmdms contributors. All rights reserved.
"""DMS against what users would pick instead, at equal MACs, on Fashion-MNIST (issue #15).

Methods x supernets x budgets x seeds. Every method ends at the budget's MACs (the supernet's
divided by 2 or 4, within 2%: asserted, counted by the export exactly as mmengine's
FlopAnalyzer counts the static model) and is then trained with the one recipe of
``configs/dms/fmnist/_base_/fmnist_recipe.py``: from scratch (DMS_np, uniform scaling) or from
the weights it kept (DMS_p and Torch-Pruning fine-tune, from a supernet trained with the same
recipe). Reported: the last epoch's test top-1 (never the best epoch's), params, MACs, and the
search cost in CPU-seconds of this process (``time.process_time``: all its threads), with the
supernet training the pretrained methods start from counted apart.

``python benchmarks/bench_peers.py [--methods dms_np uniform_width ...] [--supernets resnet mbv2]
[--budgets 2x 4x] [--seeds 0 1 2] [--subset 10000] [--results FILE] [--work-dir DIR]``
``python benchmarks/bench_peers.py --table [--results FILE]``: the markdown tables.

Each run is appended to ``--results`` (JSON lines; by default
``benchmarks/results/peers_fmnist.jsonl``, kept in git) as soon as it finishes; a rerun skips the
runs already there (resume), so a long comparison continues where it stopped, on this machine or
another (a supernet whose checkpoint is gone is trained again; a row records the top-1 of the
supernet it started from). The methods are
the rows of :data:`METHODS`: a function from the run's context to an exported subnet (a new
peer is one more row).

``--variants`` runs DMS_np / DMS_p with one knob of the search changed (:data:`VARIANTS`: the
temperature, lambda_resource, lr_structure, the search length, the importance EMA, the width-only
phase), recorded as ``<method>+<variant>``: the sensitivity study of why DMS wins or loses.
"""
import argparse
import copy
import datetime
import json
import os
import os.path as osp
import random
import socket
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools'))
from polite_threads import passive_omp_wait  # noqa: E402

passive_omp_wait()  # before torch loads

import mmdms  # noqa: E402,F401
import torch  # noqa: E402

from mmdms.apis import (build_search_model, export_subnet, load_config, run_search,  # noqa: E402
                        run_training, set_kept_channels, uniform_structure, width_producers)
from mmdms.engine.hooks.evolution_search_hook import result_file  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'configs', 'dms', 'fmnist')
SUPERNETS = ('resnet', 'mbv2')
#: budget name -> MACs of the subnet / MACs of the supernet
BUDGETS = {'2x': 0.5, '4x': 0.25}
#: Largest relative difference between a method's MACs and the budget's.
MACS_TOLERANCE = 0.02
#: The resource hook's index in the search configs' ``custom_hooks``.
RESOURCE_HOOK = 'custom_hooks.1'
DATA_ROOT = osp.join(REPO, 'data', 'fashion_mnist')
#: The comparison's results, kept in the repository: each run appends its row as it finishes.
RESULTS = osp.join(REPO, 'benchmarks', 'results', 'peers_fmnist.jsonl')
INSTALL = ('apt-get install -y dataset-fashion-mnist && '
           'python tools/dataset_converters/fashion_mnist.py')


def config(supernet: str, kind: str) -> str:
    """``configs/dms/fmnist/<supernet>_<kind>.py`` (kind: supernet, search, retrain)."""
    return osp.join(CONFIGS, f'{supernet}_{kind}.py')


@dataclass
class Run:
    """One cell of the comparison and what its method needs."""
    supernet: str
    budget: str
    method: str
    seed: int
    subset: Optional[int]
    work_dir: str
    data_options: dict
    pretrained: Callable[[], dict]  # trains (or finds) the supernet; returns its record
    variant: Optional[str] = None  # a key of VARIANTS: the search changed by one knob

    @property
    def ratio(self) -> float:
        return BUDGETS[self.budget]

    def options(self, **extra) -> dict:
        return dict(self.data_options, randomness=dict(seed=self.seed, deterministic=False),
                    **extra)


# the methods: each returns dict(subnet=<export_subnet's result>, init=<'scratch' | 'pruned'>,
# search_cpu_s=..., pretrain_cpu_s=...) -------------------------------------------------------
def _export_structure(run: Run, model, name: str, reinit: bool) -> dict:
    checkpoint = osp.join(run.work_dir, f'{name}_state.pth')
    torch.save(dict(meta=dict(method=run.method), state_dict=model.state_dict()), checkpoint)
    return export_subnet(config(run.supernet, 'search'), checkpoint,
                         osp.join(run.work_dir, 'subnet'), reinit=reinit, force=True,
                         cfg_options=run.data_options)


def _search(run: Run, load_from: Optional[str]) -> dict:
    options = run.options(**{f'{RESOURCE_HOOK}.target_ratio': run.ratio})
    if run.variant:
        options.update(variant_options(run.variant, config(run.supernet, 'search')))
    if load_from:
        options['load_from'] = load_from
    start = time.process_time()
    found = run_search(config(run.supernet, 'search'), osp.join(run.work_dir, 'search'),
                       options)
    cpu = time.process_time() - start
    subnet = export_subnet(config(run.supernet, 'search'), found['checkpoint'],
                           osp.join(run.work_dir, 'subnet'), reinit=load_from is None,
                           force=True, cfg_options=run.data_options)
    return dict(subnet=subnet, search_cpu_s=cpu, search_wall_s=found['seconds'])


def dms_np(run: Run) -> dict:
    """DMS from a random initialisation, then retrained from scratch (paper's DMS_np)."""
    return dict(_search(run, None), init='scratch', pretrain_cpu_s=0.0)


def dms_p(run: Run) -> dict:
    """DMS from the trained supernet, then the searched weights fine-tuned (paper's DMS_p)."""
    pretrained = run.pretrained()
    checkpoint = _search_checkpoint_of(run, pretrained['checkpoint'])
    return dict(_search(run, checkpoint), init='pruned',
                pretrain_cpu_s=pretrained['train_cpu_s'])


def dms_p_scratch(run: Run) -> dict:
    """Diagnostic, not a peer: the structure DMS_p's search found (its run of the same
    supernet, budget and seed; run after it) exported with fresh weights and retrained from
    scratch like DMS_np. Against DMS_np it tells the structure a trained supernet finds from
    the one random weights find; against DMS_p, what keeping the trained weights adds."""
    from mmengine.runner.checkpoint import find_latest_checkpoint
    search_dir = osp.join(osp.dirname(run.work_dir), 'dms_p', 'search')
    checkpoint = find_latest_checkpoint(search_dir) if osp.isdir(search_dir) else None
    if checkpoint is None:
        raise FileNotFoundError(f'dms_p_scratch needs the DMS_p search of the same cell in '
                                f"'{search_dir}': run --methods dms_p first")
    subnet = export_subnet(config(run.supernet, 'search'), checkpoint,
                           osp.join(run.work_dir, 'subnet'), reinit=True, force=True,
                           cfg_options=run.data_options)
    return dict(subnet=subnet, init='scratch', search_cpu_s=0.0, pretrain_cpu_s=0.0)


def _uniform(run: Run, scale_depth: bool) -> dict:
    start = time.process_time()
    model = build_search_model(load_config(config(run.supernet, 'search'), run.data_options))
    target = run.ratio * model.estimator.estimate('macs', hard=True).item()
    uniform_structure(model, target, scale_depth=scale_depth, tolerance=MACS_TOLERANCE)
    cpu = time.process_time() - start
    return dict(subnet=_export_structure(run, model, 'uniform', reinit=True), init='scratch',
                search_cpu_s=cpu, pretrain_cpu_s=0.0)


def uniform_width(run: Run) -> dict:
    """The same fraction of every width, all blocks kept; retrained from scratch."""
    return _uniform(run, scale_depth=False)


def uniform_depth_width(run: Run) -> dict:
    """The same fraction of every width and of every stage's blocks; retrained from scratch."""
    return _uniform(run, scale_depth=True)


def _search_checkpoint_of(run: Run, supernet_checkpoint: str) -> str:
    """The trained supernet's weights as a checkpoint of the search model (``architecture.``
    keys; DMS ops keep the layers' keys), so that ``load_from`` loads every weight."""
    path = osp.join(run.work_dir, 'pretrained_search_state.pth')
    model = build_search_model(load_config(config(run.supernet, 'search'), run.data_options))
    state = torch.load(supernet_checkpoint, map_location='cpu', weights_only=False)['state_dict']
    missing, unexpected = model.architecture.load_state_dict(state, strict=False)
    if unexpected or any('dms_ratio' not in k and 'importance' not in k for k in missing):
        raise RuntimeError(f'The supernet checkpoint {supernet_checkpoint} does not fit the '
                           f'search model: missing {missing}, unexpected {unexpected}')
    torch.save(dict(meta=dict(source=supernet_checkpoint), state_dict=model.state_dict()), path)
    return path


def _tp_batches(run: Run, count: int, batch_size: int = 64):
    """``count`` normalised training batches, for Torch-Pruning's Taylor importance."""
    from mmpretrain.registry import DATASETS
    cfg = load_config(config(run.supernet, 'search'), run.data_options)
    dataset = DATASETS.build(dict(type='LocalFashionMNIST', data_root=DATA_ROOT, split='train',
                                  subset=run.subset))
    generator = torch.Generator().manual_seed(run.seed)
    mean = torch.tensor(cfg.data_preprocessor.mean).view(1, -1, 1, 1)
    std = torch.tensor(cfg.data_preprocessor.std).view(1, -1, 1, 1)
    for _ in range(count):
        idx = torch.randint(len(dataset), (batch_size, ), generator=generator)
        items = [dataset.get_data_info(int(i)) for i in idx]
        images = torch.stack([torch.as_tensor(item['img']).float()[None] for item in items])
        labels = torch.tensor([int(item['gt_label']) for item in items])
        yield (images - mean) / std, labels


def torch_pruning(run: Run) -> dict:
    """Torch-Pruning's DepGraph with group Taylor importance on the trained supernet, global
    pruning stepped until the MACs budget, then fine-tuned (the TP-pruned weights are the
    supernet's, sliced: the export slices the same channels and is checked against TP's model).
    """
    import torch_pruning as tp

    from mmdms.apis import build_architecture
    from mmdms.utils import count_macs
    pretrained = run.pretrained()
    start = time.process_time()
    search = build_search_model(load_config(config(run.supernet, 'search'), run.data_options))
    target = run.ratio * search.estimator.estimate('macs', hard=True).item()
    model = build_architecture(load_config(config(run.supernet, 'search'), run.data_options))
    state = torch.load(pretrained['checkpoint'], map_location='cpu',
                       weights_only=False)['state_dict']
    model.load_state_dict({k: v for k, v in state.items()
                           if not k.startswith('data_preprocessor')}, strict=False)
    reference = copy.deepcopy(model)
    model.eval()  # BatchNorm statistics stay the trained supernet's while pruning
    example = torch.randn(1, 1, 28, 28)
    # producer layer -> the original indices of its remaining output channels
    alive = {name: list(range(module.out_channels if hasattr(module, 'out_channels') else
                              module.out_features))
             for name, module in model.named_modules()
             if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))}
    names = {module: name for name, module in model.named_modules()}
    pruner = tp.pruner.BasePruner(
        model, example, importance=tp.importance.GroupTaylorImportance(), global_pruning=True,
        pruning_ratio=0.9, iterative_steps=400, max_pruning_ratio=0.95,
        ignored_layers=[model.head.fc])
    # Torch-Pruning's own count steers the loop (fast), scaled to FlopAnalyzer's, which the
    # export counts (slow: a trace); the last steps are checked with FlopAnalyzer's.
    scale = count_macs(model, (1, 1, 28, 28)) / tp.utils.count_ops_and_params(model, example)[0]

    def estimate(exact: bool) -> float:
        return count_macs(model, (1, 1, 28, 28)) if exact else \
            scale * tp.utils.count_ops_and_params(model, example)[0]

    batches = _tp_batches(run, pruner.iterative_steps)
    steps, exact = 0, False
    macs = estimate(exact)
    while True:
        if macs <= target * (1 + MACS_TOLERANCE / 2):
            if exact:
                break
            exact = True
            macs = estimate(exact)
            continue
        if steps == pruner.iterative_steps:
            raise RuntimeError(f'Torch-Pruning stopped at {macs:.0f} MACs, above the target '
                               f'{target:.0f}')
        images, labels = next(batches)
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        for group in pruner.step(interactive=True):
            for dep, idxs in group:
                module = dep.target.module
                if pruner.DG.is_out_channel_pruning_fn(dep.handler) and names.get(module) in alive:
                    gone = set(int(i) for i in idxs)
                    alive[names[module]] = [c for i, c in enumerate(alive[names[module]])
                                            if i not in gone]
            group.prune()
        steps += 1
        macs = estimate(exact)
        if steps % 25 == 0:
            print(f'[bench_peers] torch_pruning step {steps}: {macs / 1e6:.3f}M MACs, target '
                  f'{target / 1e6:.3f}M, {time.process_time() - start:.0f} CPU-s', flush=True)
    producers = set(width_producers(search).values())
    set_kept_channels(search, {name: alive[name] for name in producers})
    search.architecture.load_state_dict(reference.state_dict(), strict=False)
    cpu = time.process_time() - start
    subnet = _export_structure(run, search, 'torch_pruning', reinit=False)
    _check_same_as(subnet, model, run)
    return dict(subnet=subnet, init='pruned', search_cpu_s=cpu, tp_steps=steps,
                pretrain_cpu_s=pretrained['train_cpu_s'])


def _check_same_as(subnet: dict, pruned: torch.nn.Module, run: Run) -> None:
    """The exported static model computes what Torch-Pruning's pruned model computes."""
    from mmengine.runner.checkpoint import _load_checkpoint

    from mmdms.apis import initialized_subnet
    from mmdms.structures import load_subnet
    cfg = load_config(config(run.supernet, 'search'), run.data_options)
    static = initialized_subnet(cfg, load_subnet(subnet['files']['subnet.json']))
    static.load_state_dict(_load_checkpoint(subnet['files']['pruned.pth'],
                                            map_location='cpu')['state_dict'])
    static.eval()
    pruned.eval()
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, actual = pruned(x), static(x, mode='tensor')
    diff = ((actual - expected).abs().max() / expected.abs().max()).item()
    if not diff <= 1e-4:
        raise RuntimeError(f'The exported Torch-Pruning subnet differs from its pruned model '
                           f'(max relative difference {diff:.3g})')


def _train_loader(cfg, seed: int):
    """The config's training dataloader, built as its Runner builds it (in its default scope:
    ``LocalFashionMNIST`` is registered in mmpretrain's registry)."""
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmpretrain')):
        return Runner.build_dataloader(copy.deepcopy(cfg.train_dataloader), seed=seed)


#: GroupFisher: training iterations between two prunings (its ``interval``; MMRazor's ImageNet
#: configs use 25 over many more iterations per epoch), and the pruning phase's learning rate
#: (a tenth of the recipe's; the recipe's SGD otherwise).
GF_INTERVAL = 2
GF_LR = 0.005


def group_fisher(run: Run) -> dict:
    """MMRazor's GroupFisher (``mmrazor.implementations.pruning.group_fisher``, the installed
    1.0.0) on the trained supernet: one training iteration of its algorithm at a time, one
    channel pruned every :data:`GF_INTERVAL` iterations by MAC-normalised group Fisher
    information, until the DMS estimator counts the budget (+1%); the channels it kept become
    the DMS structure, the export is checked against GroupFisher's pruned model, then it is
    fine-tuned like DMS_p and Torch-Pruning."""
    from mmdms.apis import build_architecture, cycle, group_fisher_prune
    pretrained = run.pretrained()
    start = time.process_time()
    cfg = load_config(config(run.supernet, 'search'), run.data_options)
    search = build_search_model(cfg)
    target = run.ratio * search.estimator.estimate('macs', hard=True).item()
    model = build_architecture(cfg)
    state = torch.load(pretrained['checkpoint'], map_location='cpu',
                       weights_only=False)['state_dict']
    missing, _ = model.load_state_dict({k: v for k, v in state.items()
                                        if not k.startswith('data_preprocessor')}, strict=False)
    if missing:
        raise RuntimeError(f'The supernet checkpoint misses {missing[:8]}')
    loader = _train_loader(cfg, run.seed)
    optimizer = cfg.optim_wrapper.optimizer

    def sgd(params):
        return torch.optim.SGD(params, lr=GF_LR, momentum=optimizer.momentum,
                               weight_decay=optimizer.weight_decay, nesterov=optimizer.nesterov)

    found = group_fisher_prune(search, model, cycle(loader), target, sgd, interval=GF_INTERVAL,
                               tolerance=MACS_TOLERANCE / 2, demo_input=(1, 1, 28, 28))
    cpu = time.process_time() - start
    subnet = _export_structure(run, search, 'group_fisher', reinit=False)
    _check_same_as(subnet, found['algorithm'].architecture, run)
    return dict(subnet=subnet, init='pruned', search_cpu_s=cpu, gf_iters=found['iters'],
                gf_interval=GF_INTERVAL, pretrain_cpu_s=pretrained['train_cpu_s'])


def dmcp(run: Run) -> dict:
    """MMRazor's DMCP (``mmrazor.models.algorithms.pruning.DMCP``, the installed 1.0.0) from a
    random initialisation for as many iterations as the DMS search (4 epochs; sandwich of the
    largest, smallest and two sampled widths per step, Markov-chain architecture parameters
    trained every 5 iterations after the first epoch with its FLOPs loss, in-place distillation
    from the second), its expected widths scaled by one factor onto the budget (DMCP searches
    no depth: every block kept), exported with fresh weights and retrained like DMS_np."""
    from mmengine.config import Config

    from mmdms.apis import build_architecture, cycle, dmcp_search
    start = time.process_time()
    cfg = load_config(config(run.supernet, 'search'), run.data_options)
    torch.manual_seed(run.seed)
    random.seed(run.seed)  # DMCP samples widths with Python's generator
    search = build_search_model(cfg)
    target = run.ratio * search.estimator.estimate('macs', hard=True).item()
    loader = _train_loader(cfg, run.seed)
    epochs = Config.fromfile(config(run.supernet, 'search')).search_epochs
    iters = epochs * len(loader)
    optimizer = cfg.optim_wrapper.optimizer

    def sgd(params):
        return torch.optim.SGD(params, lr=optimizer.lr, momentum=optimizer.momentum,
                               weight_decay=optimizer.weight_decay, nesterov=optimizer.nesterov)

    found = dmcp_search(search, build_architecture(cfg), cycle(loader), target, iters, sgd,
                        arch_start_train=len(loader), arch_train_freq=5,
                        distillation_times=2 * len(loader), tolerance=MACS_TOLERANCE,
                        demo_input=(1, 1, 28, 28))
    cpu = time.process_time() - start
    return dict(subnet=_export_structure(run, search, 'dmcp', reinit=True), init='scratch',
                search_cpu_s=cpu, pretrain_cpu_s=0.0, dmcp_iters=iters,
                dmcp_expected_macs=found['expected_macs'])


def _oneshot(run: Run) -> str:
    """The one-shot supernet of ``run``'s supernet and seed, trained once for every budget
    (``*_evolution.py``: OneShotDMS on sandwich-sampled structures; its training does not depend
    on the budget), with EvolutionSearchHook searching each budget at its end. Returns its work
    directory (``oneshot.json``: the training's CPU-seconds; ``evolution_<ratio>.json``)."""
    work_dir = osp.join(osp.dirname(osp.dirname(run.work_dir)), 'oneshot')
    ratios = [run.ratio] + [ratio for ratio in BUDGETS.values() if ratio != run.ratio]
    done = osp.join(work_dir, 'oneshot.json')
    if osp.exists(done) and all(osp.exists(osp.join(work_dir, result_file(r))) for r in ratios):
        return work_dir
    hook = 'custom_hooks.0'
    options = run.options(**{
        f'{hook}.target_ratio': ratios,
        f'{hook}.held_out_dataloader.dataset.data_root': DATA_ROOT,
        f'{hook}.held_out_dataloader.dataset.skip_per_class': run.subset // 10})
    start = time.process_time()
    metrics = run_training(config(run.supernet, 'evolution'), work_dir, options)
    cpu = time.process_time() - start
    searches = 0.0
    for ratio in ratios:
        with open(osp.join(work_dir, result_file(ratio))) as f:
            searches += json.load(f)['search_cpu_s']
    with open(done, 'w') as f:
        json.dump(dict(train_cpu_s=cpu - searches, first_budget_test_top1=metrics['accuracy/top1'],
                       checkpoint=osp.join(work_dir, f'epoch_{_epochs(run.supernet)}.pth')), f)
    return work_dir


def evolution(run: Run) -> dict:
    """One-shot supernet + evolutionary search (the paper's Table 3 baseline, ScaleNet's
    strategy), then the structure retrained from scratch like DMS_np. The one-shot supernet is
    trained once per supernet and seed and searched for every budget (:func:`_oneshot`); a
    row's search cost is that whole training plus its own budget's evolution (what it costs run
    alone for one budget)."""
    if run.subset is None:
        raise ValueError('evolution scores candidates on the training images after the subset; '
                         'run it with --subset (e.g. 10000)')
    work_dir = _oneshot(run)
    with open(osp.join(work_dir, 'oneshot.json')) as f:
        oneshot = json.load(f)
    found_file = osp.join(work_dir, result_file(run.ratio))
    with open(found_file) as f:
        found = json.load(f)
    subnet = export_subnet(config(run.supernet, 'evolution'), oneshot['checkpoint'],
                           osp.join(run.work_dir, 'subnet'), reinit=True, force=True,
                           cfg_options=run.data_options, structure=found_file)
    if subnet['macs'] != found['cost']:
        raise AssertionError(f"the exported evolution structure costs {subnet['macs']} MACs, "
                             f"the search found {found['cost']}")
    return dict(subnet=subnet, init='scratch',
                search_cpu_s=oneshot['train_cpu_s'] + found['search_cpu_s'],
                pretrain_cpu_s=0.0, oneshot_cpu_s=oneshot['train_cpu_s'],
                evolution_cpu_s=found['search_cpu_s'], evolution_candidates=found['evaluated'],
                evolution_held_out_top1=found['score'])


#: name -> the method, in the order of the tables.
METHODS: Dict[str, Callable[[Run], dict]] = {
    'dms_np': dms_np,
    'uniform_width': uniform_width,
    'evolution': evolution,
    'dmcp': dmcp,
    'dms_p': dms_p,
    'uniform_depth_width': uniform_depth_width,
    'torch_pruning': torch_pruning,
    'group_fisher': group_fisher,
}
#: Diagnostics: rows that explain the methods' differences, run only when named in
#: ``--methods`` (after the methods they read), shown after the methods in the tables.
DIAGNOSTICS: Dict[str, Callable[[Run], dict]] = {
    'dms_p_scratch': dms_p_scratch,
}
#: The methods whose search ``--variants`` change.
VARIED_METHODS = ('dms_np', 'dms_p')


def _scaled_lr_mult(cfg, factor: float) -> dict:
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    return {'optim_wrapper.paramwise_cfg.custom_keys.dms_ratio.lr_mult':
            keys['dms_ratio']['lr_mult'] * factor}


def _search_epochs(cfg, epochs: int) -> dict:
    return {'train_cfg.max_epochs': epochs, 'train_cfg.val_interval': epochs,
            'default_hooks.checkpoint.interval': epochs}


def _width_lambda_scale(cfg, scale: float) -> dict:
    args = dict(cfg.model.mutator.channel_unit_cfg.get('default_args', {}), lambda_scale=scale)
    return {'model.mutator.channel_unit_cfg.default_args': args}


def _importance_decay(cfg, decay: float) -> dict:
    # _delete_: the recipe's importance is the short name 'taylor', a string
    args = dict(cfg.model.mutator.channel_unit_cfg.get('default_args', {}), _delete_=True,
                importance=dict(type='TaylorImportance', decay=decay))
    return {'model.mutator.channel_unit_cfg.default_args': args,
            'model.mutator.depth_args': dict(cfg.model.mutator.get('depth_args') or {},
                                             importance=dict(type='TaylorImportance',
                                                             decay=decay))}


#: Sensitivity variants of the DMS search: name -> (config -> cfg options changing one knob of
#: ``configs/dms/fmnist/*_search.py``; the defaults are in ``_base_/dms_search_recipe.py``:
#: width temperature ``lambda = N`` (``lambda_scale`` 1), lambda_resource 1, lr_structure 5e-3,
#: 4 search epochs of which the last searches width only, Taylor importance EMA decay 0.99, from
#: the gradient of the whole training loss).
VARIANTS: Dict[str, Callable] = {
    'temperature_x0.25': lambda cfg: _width_lambda_scale(cfg, 0.25),
    'temperature_x4': lambda cfg: _width_lambda_scale(cfg, 4.0),
    'lambda_resource_x0.25': lambda cfg: {f'{RESOURCE_HOOK}.lambda_resource':
                                          cfg.lambda_resource * 0.25},
    'lambda_resource_x4': lambda cfg: {f'{RESOURCE_HOOK}.lambda_resource':
                                       cfg.lambda_resource * 4},
    'lr_structure_x0.25': lambda cfg: _scaled_lr_mult(cfg, 0.25),
    'lr_structure_x4': lambda cfg: _scaled_lr_mult(cfg, 4.0),
    'search_x2': lambda cfg: _search_epochs(cfg, 2 * cfg.search_epochs),
    'ema_0.9': lambda cfg: _importance_decay(cfg, 0.9),
    'no_width_only': lambda cfg: {f'{RESOURCE_HOOK}.width_only_epochs': 0},
    # the Taylor importance from the task loss alone (the resource loss still trains the ratios)
    'importance_task_only': lambda cfg: {'model.importance_from_task_loss': True},
}


def variant_options(variant: str, search_config: str) -> dict:
    """The cfg options of ``variant`` (a key of :data:`VARIANTS`) for ``search_config``."""
    from mmengine.config import Config
    return VARIANTS[variant](Config.fromfile(search_config))


#: What a method reports beyond the common fields, copied into its record.
EXTRA_FIELDS = ('tp_steps', 'search_wall_s', 'gf_iters', 'gf_interval', 'evolution_cpu_s',
                'evolution_candidates', 'evolution_held_out_top1', 'oneshot_cpu_s',
                'dmcp_iters', 'dmcp_expected_macs')


# running, resuming, recording -----------------------------------------------------------------
def run_key(supernet, budget, method, seed, subset) -> str:
    return f'{supernet}/{budget}/{method}/seed{seed}/subset{subset or "all"}'


def read_results(path: str) -> Dict[str, dict]:
    records = {}
    if osp.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    record = json.loads(line)
                    records[record['key']] = record
    return records


def append_result(path: str, record: dict) -> None:
    with open(path, 'a') as f:
        f.write(json.dumps(record) + '\n')
        f.flush()
        os.fsync(f.fileno())


def _stamp() -> dict:
    return dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                host=socket.gethostname(), cpus=os.cpu_count(),
                threads=torch.get_num_threads())


def train_supernet(supernet: str, seed: int, subset: Optional[int], work: str,
                   data_options: dict, results: str) -> dict:
    """The supernet trained with the recipe (recorded as method ``supernet``, budget ``1x``)."""
    key = run_key(supernet, '1x', 'supernet', seed, subset)
    done = read_results(results).get(key)
    if done and done.get('status') == 'ok' and osp.exists(done['checkpoint']):
        return done
    work_dir = osp.join(work, supernet, f'seed{seed}', 'supernet')
    options = dict(data_options, randomness=dict(seed=seed, deterministic=False))
    start = time.process_time()
    metrics = run_training(config(supernet, 'supernet'), work_dir, options)
    cpu = time.process_time() - start
    from mmdms.apis import build_architecture
    from mmdms.utils import count_macs, count_params
    architecture = build_architecture(load_config(config(supernet, 'search'), data_options))
    macs, params = count_macs(architecture, (1, 1, 28, 28)), count_params(architecture)
    record = dict(key=key, supernet=supernet, budget='1x', method='supernet', seed=seed,
                  subset=subset, status='ok', macs=macs, target_macs=macs, params=params,
                  top1=metrics['accuracy/top1'], search_cpu_s=0.0, pretrain_cpu_s=0.0,
                  train_cpu_s=cpu, train_wall_s=metrics['seconds'],
                  checkpoint=osp.join(work_dir, 'epoch_{}.pth'.format(_epochs(supernet))),
                  **_stamp())
    append_result(results, record)
    return record


def _epochs(supernet: str) -> int:
    from mmengine.config import Config
    return Config.fromfile(config(supernet, 'supernet')).train_cfg.max_epochs


def method_name(method: str, variant: Optional[str]) -> str:
    """A row's method: ``method``, or ``<method>+<variant>`` for a sensitivity variant."""
    return f'{method}+{variant}' if variant else method


def run_one(run: Run, results: str) -> dict:
    key = run_key(run.supernet, run.budget, method_name(run.method, run.variant), run.seed,
                  run.subset)
    print(f'[bench_peers] {key}: start', flush=True)
    wall = time.perf_counter()
    os.makedirs(run.work_dir, exist_ok=True)
    try:
        found = {**METHODS, **DIAGNOSTICS}[run.method](run)
        subnet = found['subnet']
        supernet_macs = subnet['supernet']['macs']
        target = run.ratio * supernet_macs
        gap = subnet['macs'] / target - 1
        if abs(gap) > MACS_TOLERANCE:
            raise AssertionError(f'{run.method} ended at {subnet["macs"]:.0f} MACs, '
                                 f'{gap:+.2%} from the target {target:.0f} (tolerance '
                                 f'{MACS_TOLERANCE:.0%})')
        options = run.options(model=dict(subnet=subnet['files']['subnet.json']))
        if found['init'] == 'pruned':
            options['load_from'] = subnet['files']['pruned.pth']
        start = time.process_time()
        metrics = run_training(config(run.supernet, 'retrain'), osp.join(run.work_dir, 'train'),
                               options)
        record = dict(status='ok', macs=subnet['macs'], target_macs=target, macs_gap=gap,
                      params=subnet['params'], supernet_macs=supernet_macs,
                      top1=metrics['accuracy/top1'], init=found['init'],
                      search_cpu_s=found['search_cpu_s'],
                      pretrain_cpu_s=found['pretrain_cpu_s'],
                      train_cpu_s=time.process_time() - start, train_wall_s=metrics['seconds'],
                      supernet_top1=run.pretrained()['top1'] if found['init'] == 'pruned'
                      else None,
                      **{k: v for k, v in found.items() if k in EXTRA_FIELDS})
    except Exception as e:  # recorded and reported; a rerun tries it again
        traceback.print_exc()
        record = dict(status='failed', error=f'{type(e).__name__}: {e}')
    record = dict(key=key, supernet=run.supernet, budget=run.budget,
                  method=method_name(run.method, run.variant), variant=run.variant,
                  seed=run.seed, subset=run.subset, wall_s=time.perf_counter() - wall,
                  **record, **_stamp())
    append_result(results, record)
    print(f'[bench_peers] {key}: {record["status"]} '
          f'{record.get("top1", record.get("error"))}', flush=True)
    return record


# the table ------------------------------------------------------------------------------------
def _mean_std(values: List[float], digits: int = 2) -> str:
    if not values:
        return '–'
    if len(values) == 1:
        return f'{values[0]:.{digits}f}'
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f'{statistics.mean(values):.{digits}f} ± {std:.{digits}f}'


def table(records: Dict[str, dict], subset: Optional[int] = None) -> str:
    """Markdown tables, one per supernet and budget, methods in :data:`METHODS` order (the
    sensitivity variants are :func:`sensitivity_table`'s)."""
    rows = [r for r in records.values() if r.get('subset') == subset]
    out = []
    for supernet in SUPERNETS:
        base = sorted((r for r in rows if r['supernet'] == supernet
                       and r['method'] == 'supernet' and r['status'] == 'ok'),
                      key=lambda r: r['seed'])
        if base:
            out.append(f"\n**{supernet}** supernet: {base[0]['macs'] / 1e6:.2f}M MACs, "
                       f"{base[0]['params'] / 1e6:.3f}M params, test top-1 "
                       f"{_mean_std([r['top1'] for r in base])} (seeds "
                       f"{', '.join(str(r['seed']) for r in base)}; training "
                       f"{_mean_std([r['train_cpu_s'] for r in base], 0)} CPU-s)\n")
        for budget in BUDGETS:
            cell = [r for r in rows if r['supernet'] == supernet and r['budget'] == budget]
            if not cell:
                continue
            out.append(f'\n{supernet}, {budget} fewer MACs:\n')
            out.append('| method | MACs (M) | vs target | params (M) | test top-1 (%) | '
                       'per seed | search (CPU-s) | + supernet (CPU-s) | retrain (CPU-s) |')
            out.append('|---|---|---|---|---|---|---|---|---|')
            for method in list(METHODS) + [d for d in DIAGNOSTICS
                                           if any(r['method'] == d for r in cell)]:
                done = sorted((r for r in cell if r['method'] == method and r['status'] == 'ok'),
                              key=lambda r: r['seed'])
                failed = [r for r in cell if r['method'] == method and r['status'] != 'ok'
                          and not any(d['seed'] == r['seed'] for d in done)]
                if not done:
                    status = f"failed: {failed[-1]['error'][:80]}" if failed else 'not run yet'
                    out.append(f'| {method} | {status} | | | | | | | |')
                    continue
                gaps = [r['macs_gap'] for r in done]
                per_seed = ', '.join(f"{r['top1']:.2f} (s{r['seed']})" for r in done)
                out.append(
                    f"| {method} | {_mean_std([r['macs'] / 1e6 for r in done])} "
                    f"| {max(gaps, key=abs):+.1%} "
                    f"| {_mean_std([r['params'] / 1e6 for r in done], 3)} "
                    f"| {_mean_std([r['top1'] for r in done])} "
                    f"| {per_seed} "
                    f"| {_mean_std([r['search_cpu_s'] for r in done], 0)} "
                    f"| {_mean_std([r['pretrain_cpu_s'] for r in done], 0)} "
                    f"| {_mean_std([r['train_cpu_s'] for r in done], 0)} |")
    return '\n'.join(out)


def sensitivity_table(records: Dict[str, dict], subset: Optional[int] = None) -> str:
    """One row per :data:`VARIANTS` entry run: its test top-1 per supernet, budget and DMS
    method against the same seed's default run (the difference in points), or how far it
    missed the budget."""
    rows = [r for r in records.values() if r.get('subset') == subset]
    varied = sorted({(r['method'].split('+')[0], r['supernet'], r['budget']) for r in rows
                     if r.get('variant')})
    if not varied:
        return ''
    columns = [f'{supernet} {budget} {method}' for method, supernet, budget in varied]
    out = ['\n| variant | ' + ' | '.join(columns) + ' |', '|---' * (len(columns) + 1) + '|']
    by_key = {(r['method'], r['supernet'], r['budget'], r['seed']): r for r in rows}
    baseline = []
    for method, supernet, budget in varied:
        done = [r for (m, sn, b, _), r in by_key.items()
                if (m, sn, b) == (method, supernet, budget) and r['status'] == 'ok']
        baseline.append(', '.join(f"{r['top1']:.2f} (s{r['seed']})" for r in done) or '–')
    out.append('| default | ' + ' | '.join(baseline) + ' |')
    for variant in VARIANTS:
        cells, seen = [], False
        for method, supernet, budget in varied:
            found = [r for (m, sn, b, seed), r in by_key.items()
                     if (m, sn, b) == (method_name(method, variant), supernet, budget)]
            seen = seen or bool(found)
            parts = []
            for r in sorted(found, key=lambda r: r['seed']):
                base = by_key.get((method, supernet, budget, r['seed']))
                if r['status'] != 'ok':
                    missed = r.get('error', '').split(', ')[-1].split(' from the target')[0]
                    parts.append(f"missed the budget ({missed})" if 'from the target' in
                                 r.get('error', '') else 'failed')
                elif base and base['status'] == 'ok':
                    parts.append(f"{r['top1']:.2f} ({r['top1'] - base['top1']:+.2f})")
                else:
                    parts.append(f"{r['top1']:.2f}")
            cells.append('; '.join(parts) or '–')
        if seen:
            out.append(f'| {variant} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--methods', nargs='+', default=list(METHODS),
                        choices=list(METHODS) + list(DIAGNOSTICS),
                        help='the methods to run (default: every peer); diagnostics '
                             f'({", ".join(DIAGNOSTICS)}) run only when named')
    parser.add_argument('--variants', nargs='+', default=[], choices=list(VARIANTS),
                        help='run the DMS methods of --methods (dms_np, dms_p) with these '
                             'changes of the search instead (the sensitivity study)')
    parser.add_argument('--supernets', nargs='+', default=list(SUPERNETS), choices=SUPERNETS)
    parser.add_argument('--budgets', nargs='+', default=list(BUDGETS), choices=list(BUDGETS))
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--subset', type=int, default=10000,
                        help='training images (class-balanced); 0: all 60,000')
    parser.add_argument('--supernet-only', action='store_true',
                        help='only train the supernets (e.g. --subset 0: the full-data figure)')
    parser.add_argument('--results', default=RESULTS,
                        help='JSON lines, appended as runs finish (the default is tracked in git, '
                             'so the comparison resumes on another machine)')
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'bench_peers'))
    parser.add_argument('--table', action='store_true', help='print the tables and exit')
    parser.add_argument('--gf-interval', type=int, default=GF_INTERVAL,
                        help='GroupFisher: training iterations between two prunings')
    args = parser.parse_args()
    globals()['GF_INTERVAL'] = args.gf_interval
    subset = args.subset or None
    if args.table:
        print(table(read_results(args.results), subset))
        print(sensitivity_table(read_results(args.results), subset))
        return
    if not osp.exists(osp.join(DATA_ROOT, 'train-images-idx3-ubyte')):
        sys.exit(f"bench_peers: Fashion-MNIST is not in '{DATA_ROOT}'. Install it with: "
                 f'{INSTALL}')
    os.makedirs(osp.dirname(osp.abspath(args.results)), exist_ok=True)
    work = osp.abspath(osp.join(args.work_dir, f'subset{subset or "all"}'))
    data_options = {'train_dataloader.dataset.subset': subset,
                    'train_dataloader.dataset.data_root': DATA_ROOT,
                    'val_dataloader.dataset.data_root': DATA_ROOT,
                    'test_dataloader.dataset.data_root': DATA_ROOT}
    for seed in args.seeds:
        for supernet in args.supernets:
            def pretrained(supernet=supernet, seed=seed):
                return train_supernet(supernet, seed, subset, work, data_options, args.results)

            if args.supernet_only:
                pretrained()
                continue
            # a method's budgets one after the other: the pretrained methods then use the
            # supernet trained in the same sitting, and evolution its one one-shot training
            runs = [(m, v) for m in args.methods for v in args.variants
                    if m in VARIED_METHODS] if args.variants else \
                [(m, None) for m in args.methods]
            for method, variant in runs:
                name = method_name(method, variant)
                for budget in args.budgets:
                    key = run_key(supernet, budget, name, seed, subset)
                    if read_results(args.results).get(key, {}).get('status') == 'ok':
                        print(f'[bench_peers] {key}: done before, skipped', flush=True)
                        continue
                    run_one(Run(supernet, budget, method, seed, subset,
                                osp.join(work, supernet, f'seed{seed}', budget, name),
                                data_options, pretrained, variant), args.results)
    print(table(read_results(args.results), subset))


if __name__ == '__main__':
    main()
