# Copyright (c) mmdms contributors. All rights reserved.
"""MMRazor's own pruning algorithms driven to a DMS budget, their channel choice carried into a
DMS search model (so the project's export writes, checks and retrains it like a DMS subnet).

``group_fisher_prune`` runs MMRazor 1.0.0's ``GroupFisherAlgorithm`` (Liu et al., *Group Fisher
Pruning for Practical Network Compression*, ICML 2021: the Fisher information of each channel
group, normalised by the MACs it costs, summed over ``interval`` training iterations; then the
channel of least importance is pruned) from the installed package, with its own mutator, units
and dynamic ops, on a plain architecture, until the DMS estimator counts the budget.

``dmcp_search`` runs MMRazor 1.0.0's ``DMCP`` (Guo et al., *DMCP: Differentiable Markov
Channel Pruning*, CVPR 2020: every width is a Markov chain over groups of channels, its
transition probabilities learnt with a FLOPs loss while the weights train on the largest,
smallest and sampled widths, with in-place distillation) from the installed package, then takes
its *expected* widths (the paper's final sampling) and scales them by one factor onto the budget.
"""
import functools
import time
from typing import Callable, Dict, Iterable, Iterator, List, Optional

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from mmengine import MessageHub
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope

from .channel_selection import set_kept_channels, width_producers
from .uniform_scaling import bisect_to_target


def _in_mmrazor_scope(function: Callable) -> Callable:
    """Run ``function`` with MMRazor as the default scope: MMRazor's algorithms build their
    mutators, units, tracers, distillers and counters by name from its registries, which a
    process that ran an mmpretrain Runner would otherwise search first (``KeyError:
    'GroupFisherChannelMutator is not in the mmpretrain::model registry'``)."""

    @functools.wraps(function)
    def scoped(*args, **kwargs):
        with DefaultScope.overwrite_default_scope('mmrazor'):
            return function(*args, **kwargs)

    return scoped

#: DMCP's in-place distillation of MMRazor's DMCP configs: the smaller widths learn the largest's
#: logits (KL divergence of ``head.fc``).
DMCP_DISTILLER = dict(
    type='ConfigurableDistiller',
    teacher_recorders=dict(fc=dict(type='ModuleOutputs', source='head.fc')),
    student_recorders=dict(fc=dict(type='ModuleOutputs', source='head.fc')),
    distill_losses=dict(loss_kl=dict(type='KLDivergence', tau=1, loss_weight=1)),
    loss_forward_mappings=dict(loss_kl=dict(
        preds_S=dict(recorder='fc', from_student=True),
        preds_T=dict(recorder='fc', from_student=False))))


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
            if not isinstance(channel.module, nn.Module):
                continue  # a function of the traced graph (the add of a residual)
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


@_in_mmrazor_scope
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


def _dmcp_class():
    """MMRazor's DMCP, adapted in two ways that leave its algorithm as it is:

    * it counts its FLOPs at the model's input shape (``calc_current_flops`` builds
      ``ResourceEstimator()``, whose default input is 1x3x224x224: a 1-channel 28x28 network
      fails there);
    * with ``arch_step_batch_stats`` its architecture step normalises with the batch's
      statistics instead of the running ones (``_update_arch_params`` puts the whole model in
      eval mode). The running statistics of a network trained on sampled widths mix every
      width's (the sandwich's largest, smallest and random ones), so they do not fit the
      largest network the architecture step runs: on the Fashion-MNIST ResNet-style supernet
      its eval-mode logits grew from 25 to 7e6 in the first four architecture steps after the
      first epoch, and the fifth made the architecture parameters NaN. The batch statistics are
      used without updating the running ones (momentum 0 during the step).
    """
    from mmrazor.models.algorithms.pruning.dmcp import DMCP
    from mmrazor.models.task_modules.estimators import ResourceEstimator

    class DMCPAtInputShape(DMCP):

        def __init__(self, *args, input_shape=(1, 3, 224, 224), arch_step_batch_stats=True,
                     **kwargs) -> None:
            self.input_shape = tuple(input_shape)
            self.arch_step_batch_stats = arch_step_batch_stats
            self._in_arch_step = False
            super().__init__(*args, **kwargs)

        def calc_current_flops(self):
            estimator = ResourceEstimator(input_shape=self.input_shape)
            return estimator.estimate(model=self.architecture.backbone,
                                      flops_params_cfg=dict(units=None))['flops']

        def _update_arch_params(self, *args, **kwargs):
            norms = [m for m in self.architecture.modules() if isinstance(m, _BatchNorm)]
            momenta = [m.momentum for m in norms]
            self._in_arch_step = self.arch_step_batch_stats
            try:
                return super()._update_arch_params(*args, **kwargs)
            finally:
                self._in_arch_step = False
                for norm, momentum in zip(norms, momenta):
                    norm.momentum = momentum

        def train(self, mode: bool = True):
            super().train(mode)
            if not mode and self._in_arch_step:
                for norm in self.architecture.modules():
                    if isinstance(norm, _BatchNorm):
                        norm.train()
                        norm.momentum = 0.0
            return self

    return DMCPAtInputShape


@_in_mmrazor_scope
def dmcp_search(search: nn.Module,
                architecture: nn.Module,
                batches: Iterator[dict],
                target: float,
                iters: int,
                weight_optimizer: Callable[[List[nn.Parameter]], torch.optim.Optimizer],
                arch_lr: float = 0.5,
                arch_start_train: Optional[int] = None,
                arch_train_freq: int = 5,
                distillation_times: Optional[int] = None,
                flops_loss_type: str = 'l1',
                flop_loss_weight: float = 0.1,
                arch_step_batch_stats: bool = True,
                tolerance: float = 0.02,
                demo_input=(1, 3, 224, 224),
                log_every: int = 50) -> Dict:
    """Search ``architecture``'s widths with MMRazor's DMCP for ``iters`` iterations, then set
    its expected widths, scaled by one factor onto ``target`` MACs, on ``search``.

    DMCP's own FLOPs target is ``target`` as a fraction of the supernet (its estimator counts
    the backbone only, with MMRazor's counters); the final widths are scaled until the DMS
    estimator counts ``target`` within ``tolerance`` (DMCP's FLOPs loss only steers towards
    it). Depths are not searched by DMCP: every block is kept. The kept channels are the first
    ones of each width, as DMCP's Markov chain keeps them.

    Args:
        search: the DMS search model of the same architecture (its structure is set).
        architecture: the plain model to search (from random weights for DMS_np-like use).
        batches: data batches, drawn as needed.
        target: the MACs budget (DMS estimator's count).
        iters: training iterations of the search.
        weight_optimizer: params -> the weights' optimiser.
        arch_lr: Adam's learning rate of the architecture parameters (MMRazor's configs: 0.5,
            weight decay 1e-3).
        arch_start_train: iteration from which the architecture parameters train (default: a
            quarter of ``iters``, as MMRazor's configs start them early in the schedule).
        arch_train_freq: iterations between two architecture updates.
        distillation_times: iteration from which the in-place distillation is added (default:
            half of ``iters``).
        flops_loss_type: DMCP's FLOPs loss. ``'l1'`` by default: MMRazor 1.0.0's default
            ``'log_l1'`` compares the expected FLOPs (in FLOPs) with ``0.95 * target_flops`` (in
            MFLOPs), so it pulls the FLOPs towards zero rather than to the target.
        flop_loss_weight: its weight (MMRazor's ResNet-50 config: 0.1).
        arch_step_batch_stats: the architecture step normalises with the batch's statistics
            (True, the default) or with the running ones, as MMRazor 1.0.0 does (False: on a
            search as short as DMS's the running statistics of the sampled widths do not fit
            the largest network and the architecture parameters became NaN; see
            ``_dmcp_class``).
        tolerance: the band of the final scaling.
        demo_input: the input shape (tracer and DMCP's FLOPs count).
        log_every: log every this many iterations.

    Returns:
        dict: ``algorithm`` (MMRazor's DMCP), ``expected`` (DMS width key -> DMCP's expected
        channels, rounded), ``expected_macs`` (DMS count of those widths), ``macs`` (after
        the scaling), ``iters``.
    """
    from mmengine.optim import OptimWrapperDict

    supernet = float(search.estimator.estimate('macs', full=True))
    algorithm = _dmcp_class()(
        distiller=DMCP_DISTILLER, architecture=architecture, input_shape=tuple(demo_input),
        mutator_cfg=dict(type='DMCPChannelMutator',
                         channel_unit_cfg=dict(type='DMCPChannelUnit',
                                               default_args=dict(choice_mode='number')),
                         parse_cfg=dict(type='ChannelAnalyzer', demo_input=tuple(demo_input),
                                        tracer_type='FxTracer')),
        strategy=['max', 'min', 'scheduled_random', 'arch_random'],
        arch_start_train=iters // 4 if arch_start_train is None else arch_start_train,
        arch_train_freq=arch_train_freq,
        distillation_times=iters // 2 if distillation_times is None else distillation_times,
        flops_loss_type=flops_loss_type, flop_loss_weight=flop_loss_weight, target_flops=0.0,
        arch_step_batch_stats=arch_step_batch_stats)
    algorithm.set_subnet('max', arch_train=False)
    algorithm.target_flops = float(algorithm.calc_current_flops()) * target / supernet / 1e6
    arch_params = list(algorithm.mutator.arch_params.parameters())
    arch_ids = {id(p) for p in arch_params}
    optim_wrapper = OptimWrapperDict(
        architecture=OptimWrapper(weight_optimizer(
            [p for p in algorithm.parameters() if id(p) not in arch_ids and p.requires_grad])),
        mutator=OptimWrapper(torch.optim.Adam(arch_params, lr=arch_lr, weight_decay=1e-3)))
    hub = MessageHub.get_current_instance()
    algorithm.train()
    start = time.process_time()
    for it in range(1, iters + 1):
        hub.update_info('iter', it)
        log = algorithm.train_step(next(batches), optim_wrapper)
        if it % log_every == 0:
            shown = ', '.join(f'{k}={float(v):.3f}' for k, v in log.items())
            print_log(f'dmcp_search {it}/{iters}: {shown}; '
                      f'{time.process_time() - start:.0f} CPU-s', logger='current')
    # the expected widths (DMCP's final sampling), first channels, on the DMS space
    expected_by_layer = {}
    for group_id, unit in enumerate(algorithm.mutator.units):
        channels = algorithm.mutator._prune_by_arch('expected', group_id)
        for channel in unit.output_related:
            expected_by_layer[channel.name] = max(1, int(round(float(channels))))
    producers = width_producers(search)
    kept = {layer: list(range(expected_by_layer.get(
        layer, search.space.widths[key].mutable.num_channels)))
        for key, layer in producers.items()}
    set_kept_channels(search, kept)
    expected = {key: len(kept[layer]) for key, layer in producers.items()}
    expected_macs = float(search.estimator.estimate('macs', hard=True))
    macs = scale_widths_to(search, expected, target, tolerance)
    return dict(algorithm=algorithm, expected=expected, expected_macs=expected_macs, macs=macs,
                iters=iters)


def scale_widths_to(search: nn.Module, widths: Dict[str, int], target: float,
                    tolerance: float = 0.02, steps: int = 40) -> float:
    """Keep ``round(f * widths[key])`` elements of every width of ``search`` (all blocks), the
    one factor ``f`` bisected until the exact MACs are within ``tolerance`` of ``target``.

    Where widths of a few channels round together, one step of ``f`` can jump over the band
    (DMCP's 4x ResNet structure on Fashion-MNIST: 2.1% over at best); the widths are then moved
    one element at a time, the one furthest above (or below) ``f`` times its planned width
    first, until the MACs are in the band.

    Which elements are kept is the mutables' ranking (after :func:`set_kept_channels` of the
    first channels: the first ones). Returns the MACs.

    Raises:
        ValueError: no factor gets within ``tolerance`` (the widths are too coarse).
    """
    mutables = {key: search.space.widths[key].mutable for key in widths}
    for mutable in search.space.depth_mutables():
        mutable.set_kept(mutable.num_elements)

    def cost_at(factor: float) -> float:
        for key, mutable in mutables.items():
            mutable.set_kept(min(mutable.num_elements,
                                 max(mutable.min_elements, round(factor * widths[key]))))
        return float(search.estimator.estimate('macs', hard=True))

    high = max(m.num_elements / max(widths[k], 1) for k, m in mutables.items())
    _, cost = bisect_to_target(cost_at, high, target, tolerance, steps)
    cost = _step_widths_into_band(search, mutables, widths, cost, target, tolerance)
    if abs(cost - target) > tolerance * target:
        raise ValueError(f'scale_widths_to: no scaling of the widths is within {tolerance:.0%} '
                         f'of {target:.6g} MACs; the closest is {cost:.6g}')
    return cost


def _step_widths_into_band(search: nn.Module, mutables: Dict[str, nn.Module],
                           widths: Dict[str, int], cost: float, target: float,
                           tolerance: float) -> float:
    """One element of one width at a time towards ``target`` (see :func:`scale_widths_to`);
    a width whose step would cross the whole band moves no more. Stops in the band or where no
    width can move."""
    def kept(key: str) -> int:
        return mutables[key].num_kept

    too_coarse = set()
    for _ in range(sum(m.num_elements for m in mutables.values())):
        if abs(cost - target) <= tolerance * target:
            break
        shrink = cost > target
        movable = [k for k, m in mutables.items() if k not in too_coarse and
                   (kept(k) > m.min_elements if shrink else kept(k) < m.num_elements)]
        if not movable:
            break
        ratio = {k: kept(k) / max(widths[k], 1) for k in movable}
        key = max(movable, key=ratio.get) if shrink else min(movable, key=ratio.get)
        before = kept(key)
        mutables[key].set_kept(before - 1 if shrink else before + 1)
        stepped = float(search.estimator.estimate('macs', hard=True))
        if (stepped < target) != (cost < target) and \
                abs(stepped - target) > tolerance * target:
            mutables[key].set_kept(before)
            too_coarse.add(key)
            continue
        cost = stepped
    return cost


def cycle(loader: Iterable) -> Iterator:
    """Batches of ``loader``, epoch after epoch."""
    while True:
        yield from loader
