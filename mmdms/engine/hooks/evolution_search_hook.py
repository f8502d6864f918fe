# Copyright (c) mmdms contributors. All rights reserved.
"""Evolutionary search on a trained one-shot supernet at the end of its training."""
import json
import os.path as osp
import time
from typing import Dict, Iterable, List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch.nn.modules.batchnorm import _BatchNorm

from mmdms.models.space_structure import Structure, set_structure
from ..evolution_search import EvolutionSearch

#: What the hook writes into the work directory.
RESULT_FILE = 'evolution.json'


def result_file(ratio: float) -> str:
    """The file of one budget's result when the hook searches several."""
    return f'evolution_{ratio:g}.json'


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable, count: int) -> None:
    """Re-estimate every BatchNorm's running statistics for the structure set on ``model``
    (a one-shot supernet's are an average over the sampled structures): reset, then a
    cumulative average over ``count`` batches in training mode. Leaves ``model`` in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    try:
        for index, batch in enumerate(batches):
            if index == count:
                break
            data = model.data_preprocessor(batch, False)
            model(data['inputs'], mode='tensor')
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.eval()


@torch.no_grad()
def top1(model: nn.Module, batches: Iterable) -> float:
    """Top-1 accuracy (%) of ``model``'s logits (``mode='tensor'``) on labelled batches."""
    model.eval()
    correct = total = 0
    for batch in batches:
        data = model.data_preprocessor(batch, False)
        logits = model(data['inputs'], mode='tensor')
        labels = torch.cat([s.gt_label for s in data['data_samples']]).to(logits.device)
        correct += int((logits.argmax(dim=1) == labels).sum())
        total += len(labels)
    if not total:
        raise ValueError('top1: the held-out dataloader yielded no images')
    return 100.0 * correct / total


@HOOKS.register_module()
class EvolutionSearchHook(Hook):
    """At the end of a one-shot supernet's training (:class:`~mmdms.models.OneShotDMS`), search
    its space by evolution under a resource budget and leave the best structure set.

    Each candidate structure is scored by the shared weights: BatchNorm statistics recalibrated
    on ``calib_batches`` training batches, then top-1 on ``held_out_dataloader`` (images the
    training does not see), among the structures the supernet trained (each width at least
    its ``min_width_fraction``). The best structure stays set on the model, so the last
    checkpoint (written after this hook: the checkpoint hook runs later) exports it with
    ``tools/export_subnet.py CONFIG CHECKPOINT --reinit`` and the final validation reports it
    (with the shared weights). ``evolution.json`` in the work directory records the structure,
    its cost and score, the per-generation history and the search's CPU-seconds.

    One trained one-shot supernet serves any number of budgets (its training does not depend on
    them): with several ``target_ratio`` values, each is searched in turn and its result written
    to ``evolution_<ratio>.json`` as well; the first ratio's structure is the one left set (and
    in ``evolution.json``). Another budget's structure is exported from the same checkpoint with
    ``tools/export_subnet.py CONFIG CHECKPOINT --structure evolution_<ratio>.json``.

    Args:
        target_ratio (float | Sequence[float]): the budget(s) as a fraction of the supernet's
            ``resource``.
        held_out_dataloader (dict): the dataloader config of the scoring images.
        resource (str): ``'macs'`` or ``'params'`` (what the DMS estimator counts).
        tolerance (float): candidates cost within ``target * (1 ± tolerance)``.
        calib_batches (int): training batches per BatchNorm recalibration.
        population_size, generations, num_parents, num_mutation, mutate_prob, seed: of
            :class:`~mmdms.engine.evolution_search.EvolutionSearch`.
    """

    priority = 'NORMAL'  # before the CheckpointHook (VERY_LOW) of the same epoch

    def __init__(self,
                 target_ratio: Union[float, Sequence[float]],
                 held_out_dataloader: Dict,
                 resource: str = 'macs',
                 tolerance: float = 0.02,
                 calib_batches: int = 10,
                 population_size: int = 20,
                 generations: int = 5,
                 num_parents: int = 5,
                 num_mutation: int = 10,
                 mutate_prob: float = 0.2,
                 seed: int = 0) -> None:
        ratios = [target_ratio] if isinstance(target_ratio, (int, float)) \
            else list(target_ratio)
        if not ratios or not all(0 < ratio <= 1 for ratio in ratios):
            raise ValueError(f'EvolutionSearchHook: target_ratio must be in (0, 1] (or a list of '
                             f'such), got {target_ratio}')
        if calib_batches < 1:
            raise ValueError(f'EvolutionSearchHook: calib_batches must be >= 1, got '
                             f'{calib_batches}')
        self.target_ratios: List[float] = [float(ratio) for ratio in ratios]
        self.held_out_dataloader = held_out_dataloader
        self.resource = resource
        self.tolerance = tolerance
        self.calib_batches = calib_batches
        self.evolution_args = dict(population_size=population_size, generations=generations,
                                   num_parents=num_parents, num_mutation=num_mutation,
                                   mutate_prob=mutate_prob, seed=seed)
        #: Every ratio's result, in the order of ``target_ratio``.
        self.results: List[dict] = []

    @property
    def result(self) -> Optional[dict]:
        """The first ratio's result (the structure left set on the model); None before the
        search."""
        return self.results[0] if self.results else None

    def before_train(self, runner) -> None:
        model = self._model(runner)
        if not hasattr(model, 'sandwich'):
            raise TypeError(f'EvolutionSearchHook searches a one-shot supernet '
                            f"(model type='OneShotDMS'), got {type(model).__name__}")

    @staticmethod
    def _model(runner) -> nn.Module:
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def after_train_epoch(self, runner) -> None:
        if runner.epoch + 1 == runner.max_epochs:
            self.search(runner)

    def search(self, runner) -> dict:
        """Run the evolution on ``runner``'s model for every target ratio; returns (and writes)
        the first ratio's result and leaves its structure set."""
        model = self._model(runner)
        held_out = runner.build_dataloader(self.held_out_dataloader)

        def score(structure: Structure) -> float:
            set_structure(model, structure)
            recalibrate_batchnorm(model, runner.train_dataloader, self.calib_batches)
            return top1(model, held_out)

        supernet = model.supernet_resource(self.resource)
        self.results = []
        for index, ratio in enumerate(self.target_ratios):
            start = time.process_time()
            target = ratio * supernet
            evolution = EvolutionSearch(model, score, target, resource=self.resource,
                                        tolerance=self.tolerance,
                                        min_width_fraction=model.min_width_fraction,
                                        **self.evolution_args)
            found = evolution.run()
            result = dict(found, supernet=supernet,
                          resource=self.resource, target_ratio=ratio,
                          search_cpu_s=time.process_time() - start,
                          held_out_images=len(held_out.dataset))
            self.results.append(result)
            names = [] if len(self.target_ratios) == 1 else [result_file(ratio)]
            if index == 0:
                names.append(RESULT_FILE)
            for name in names:
                with open(osp.join(runner.work_dir, name), 'w') as f:
                    json.dump(result, f, indent=1)
            print_log(f"EvolutionSearchHook: best structure {found['cost']:.6g} {self.resource} "
                      f'(target {target:.6g}), held-out top-1 {found["score"]:.2f}, '
                      f"{found['evaluated']} structures scored in {result['search_cpu_s']:.0f} "
                      f"CPU-s; written to {', '.join(names)} in {runner.work_dir}",
                      logger='current')
        set_structure(model, self.result['structure'])
        recalibrate_batchnorm(model, runner.train_dataloader, self.calib_batches)
        model.train()
        return self.result
