# Copyright (c) mmdms contributors. All rights reserved.
"""MMRazor's own pruning algorithms driven to a DMS budget, their channel choice carried into a
DMS search model (so the project's export writes, checks and retrains it like a DMS subnet).

``group_fisher_prune`` runs MMRazor 1.0.0's ``GroupFisherAlgorithm`` (Liu et al., *Group Fisher
Pruning for Practical Network Compression*, ICML 2021: the Fisher information of each channel
group, normalised by the MACs it costs, summed over ``interval`` training iterations; then the
channel of least importance is pruned) from the installed package, with its own mutator, units
and dynamic ops, on a plain architecture, until the DMS estimator counts the budget.
"""
import time
from typing import Callable, Dict, Iterable, Iterator, List

import torch
import torch.nn as nn
from mmengine import MessageHub
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper

from .channel_selection import set_kept_channels, width_producers


def kept_channels_of_units(search: nn.Module, units: Iterable) -> Dict[str, List[int]]:
    """The output channels an MMRazor channel mutator keeps, per DMS width producer.

    Args:
        search: a DMS search model of the same architecture (its ``space``).
        units: MMRazor ``MutableChannelUnit`` s (``mutator.units``) traced on that
            architecture (module names relative to it).

    Returns:
        dict: each DMS width producer -> the indices of its output channels that the unit
        producing them keeps (all channels for producers no mutable unit covers).

    Raises:
        ValueError: a producer's channels are split over several units (the two tracers
            disagree on the groups), naming it.
    """
    masks: Dict[str, torch.Tensor] = {}
    for unit in units:
        if not unit.is_mutable:
            continue
        mask = unit.mutable_channel.current_mask.bool()
        for channel in unit.output_related:
            if channel.name in masks or (channel.start, channel.end) != (0, channel.end):
                raise ValueError(f"kept_channels_of_units: the output channels of "
                                 f"'{channel.name}' are split over several MMRazor units")
            masks[channel.name] = mask
    kept = {}
    for key, layer in width_producers(search).items():
        mutable = search.space.widths[key].mutable
        mask = masks.get(layer)
        if mask is None:
            kept[layer] = list(range(mutable.num_channels))
        elif len(mask) != mutable.num_channels:
            raise ValueError(f"kept_channels_of_units: '{layer}' has {mutable.num_channels} "
                             f'channels in the DMS space but {len(mask)} in its MMRazor unit')
        else:
            kept[layer] = [int(i) for i in torch.nonzero(mask).flatten()]
    return kept


def group_fisher_prune(search: nn.Module,
                       architecture: nn.Module,
                       batches: Iterator[dict],
                       target: float,
                       optimizer: Callable[[List[nn.Parameter]], torch.optim.Optimizer],
                       interval: int = 10,
                       tolerance: float = 0.01,
                       demo_input=(1, 3, 224, 224),
                       normalization_type: str = 'flops',
                       max_iters: int = 100000,
                       log_every: int = 25) -> Dict:
    """Prune ``architecture`` with MMRazor's GroupFisher until ``search``'s estimator counts
    at most ``target * (1 + tolerance)`` MACs for the channels it keeps.

    Every iteration is MMRazor's ``GroupFisherAlgorithm.train_step`` (a training step that
    also accumulates the Fisher information); every ``interval`` iterations it prunes one
    channel. After each pruning the kept channels are set on ``search``
    (:func:`set_kept_channels`) and counted exactly; the search model's weights become the
    pruned architecture's (masked channels stay, sliced away by the export).

    Args:
        search: the DMS search model of the same architecture (its structure is set).
        architecture: the plain model to prune (e.g. the trained supernet); it is trained.
        batches: data batches (the dicts a dataloader yields), drawn as needed.
        target: the MACs budget.
        optimizer: params -> the optimiser of the pruning phase's training.
        interval: iterations between two prunings (GroupFisher's ``interval``).
        tolerance: stop at the first pruning at or below ``target * (1 + tolerance)``.
        demo_input: the tracer's input shape.
        normalization_type: GroupFisher's ``'flops'`` (importance per MAC), ``'act'`` or
            ``'none'``.
        max_iters: give up after this many iterations.
        log_every: log every this many prunings.

    Returns:
        dict: ``algorithm`` (MMRazor's, its ``architecture`` pruned by masks), ``macs``,
        ``iters``, ``pruned`` (channels), ``kept`` (:func:`kept_channels_of_units`).

    Raises:
        RuntimeError: the budget was not reached in ``max_iters`` iterations.
    """
    from mmrazor.implementations.pruning.group_fisher import GroupFisherAlgorithm
    algorithm = GroupFisherAlgorithm(
        architecture,
        mutator=dict(type='GroupFisherChannelMutator',
                     parse_cfg=dict(type='ChannelAnalyzer', demo_input=tuple(demo_input),
                                    tracer_type='FxTracer'),
                     channel_unit_cfg=dict(
                         type='GroupFisherChannelUnit',
                         default_args=dict(normalization_type=normalization_type))),
        interval=interval)
    algorithm.train()
    optim_wrapper = OptimWrapper(optimizer([p for p in algorithm.parameters()
                                            if p.requires_grad]))
    hub = MessageHub.get_current_instance()
    start = time.process_time()
    macs = float('inf')
    pruned = 0
    kept: Dict[str, List[int]] = {}
    for it in range(1, max_iters + 1):
        hub.update_info('iter', it)  # GroupFisher prunes when RuntimeInfo.iter() % interval == 0
        algorithm.train_step(next(batches), optim_wrapper)
        if it % interval:
            continue
        pruned += 1
        kept = kept_channels_of_units(search, algorithm.mutator.units)
        set_kept_channels(search, kept)
        macs = float(search.estimator.estimate('macs', hard=True))
        if pruned % log_every == 0:
            print_log(f'group_fisher_prune: {pruned} channels pruned in {it} iterations, '
                      f'{macs / 1e6:.3f}M MACs (target {target / 1e6:.3f}M), '
                      f'{time.process_time() - start:.0f} CPU-s', logger='current')
        if macs <= target * (1 + tolerance):
            break
    else:
        raise RuntimeError(f'group_fisher_prune: {macs:.0f} MACs after {max_iters} iterations, '
                           f'above the target {target:.0f}; raise max_iters or lower interval')
    algorithm.eval()
    missing, unexpected = search.architecture.load_state_dict(
        algorithm.architecture.state_dict(), strict=False)
    weights = [k for k in missing if not k.endswith(('dms_ratio', 'importance'))]
    if weights:
        raise RuntimeError(f'group_fisher_prune: the pruned weights do not fit the search '
                           f'model: missing {weights[:8]}, unexpected {unexpected[:8]}')
    return dict(algorithm=algorithm, macs=macs, iters=it, pruned=pruned, kept=kept)


def cycle(loader: Iterable) -> Iterator:
    """Batches of ``loader``, epoch after epoch."""
    while True:
        yield from loader
