# Copyright (c) mmdms contributors. All rights reserved.
"""Evolutionary search over a DMS search space under a resource budget: the one-shot baseline of
the paper's Table 3 and ScaleNet's strategy (a supernet trained with sampled structures, then
evolution scored by the shared weights).

A *structure* is ``{mutable name: kept elements}`` for every width (``width:<key>``) and depth
(``depth:<key>``) of ``algorithm.space``: the encoding DMS's own search ends at, so an evolved
structure exports, retrains and is counted exactly as a DMS one. Which elements are kept is the
mutables' importance ranking; a one-shot supernet (:class:`~mmdms.models.OneShotDMS`) uses
``importance='index'``: the first channels and the first blocks.

MMRazor's ``EvolutionSearchLoop`` is not used: it samples and sets structures through
``mutator.sample_choices()`` / ``set_choices()`` over MMRazor's one-shot mutables (value
choices), counts resources with MMRazor's ``ResourceEstimator`` on an exported fix-subnet, and
replaces the trainer's loop; DMS's mutables are ratios over ranked elements, counted from the
search space's recorded layer calls. This module keeps MMRazor's loop's procedure (random
population under the constraint, top-k, mutation with a per-gene probability, crossover,
candidates that break the constraint dropped) over the DMS encoding, and adds a repair that
scales a candidate's kept counts onto the budget (the comparison needs every method within
±2% of one budget, which random structures almost never hit).
"""
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

from mmdms.models.space_structure import (Structure, sample_structure, set_structure,
                                          smallest_kept, structure_key, structure_mutables)

class EvolutionSearch:
    """Evolution of structures under ``lower <= cost <= upper``, scored by ``score``.

    Args:
        algorithm (nn.Module): a DMS search model (its ``space`` and ``estimator``).
        score (callable): structure -> a score to maximise (e.g. held-out top-1 of the
            one-shot supernet with that structure set); called once per distinct structure.
        target (float): the budget in ``resource`` units.
        resource (str): what the estimator counts (``'macs'``, ``'params'``, ...).
        tolerance (float): candidates must cost within ``target * (1 ± tolerance)``; the
            repair scales a candidate's kept counts by one factor to get there.
        population_size (int): candidates per generation (the first ones random).
        generations (int): rounds of scoring and breeding.
        num_parents (int): the best candidates so far, which breed the next generation.
        num_mutation (int): children by mutation per generation (the rest by crossover).
        mutate_prob (float): per-mutable probability of a new random kept count.
        seed (int): the generator's seed (the search is deterministic given ``score``).
        min_width_fraction (float): every width keeps at least this fraction of its elements
            (the one-shot supernet's sampling range, ``OneShotDMS.min_width_fraction``).
        max_tries (int): random draws allowed per wanted candidate before giving up.
    """

    def __init__(self,
                 algorithm: nn.Module,
                 score: Callable[[Structure], float],
                 target: float,
                 resource: str = 'macs',
                 tolerance: float = 0.02,
                 population_size: int = 20,
                 generations: int = 5,
                 num_parents: int = 5,
                 num_mutation: int = 10,
                 mutate_prob: float = 0.2,
                 seed: int = 0,
                 min_width_fraction: float = 0.0,
                 max_tries: int = 20) -> None:
        if not target > 0:
            raise ValueError(f'EvolutionSearch: the target must be positive, got {target}')
        if not 0 < tolerance < 1:
            raise ValueError(f'EvolutionSearch: tolerance must be in (0, 1), got {tolerance}')
        if not 0 < num_parents <= population_size or not 0 <= num_mutation <= population_size:
            raise ValueError('EvolutionSearch: need 0 < num_parents <= population_size and '
                             f'0 <= num_mutation <= population_size, got num_parents='
                             f'{num_parents}, num_mutation={num_mutation}, population_size='
                             f'{population_size}')
        self.algorithm = algorithm
        self.score_fn = score
        self.target = float(target)
        self.resource = resource
        self.lower = self.target * (1 - tolerance)
        self.upper = self.target * (1 + tolerance)
        self.population_size = population_size
        self.generations = generations
        self.num_parents = num_parents
        self.num_mutation = num_mutation
        self.mutate_prob = mutate_prob
        self.max_tries = max_tries
        self.generator = torch.Generator().manual_seed(seed)
        self.mutables = structure_mutables(algorithm)
        self.min_width_fraction = min_width_fraction
        #: the fewest elements a candidate keeps of each mutable
        self.low = {name: smallest_kept(name, m, min_width_fraction)
                    for name, m in self.mutables.items()}
        self.scores: Dict[Tuple, float] = {}
        self.costs: Dict[Tuple, float] = {}
        self.history: List[dict] = []

    # cost and repair ---------------------------------------------------------------------------
    def cost(self, structure: Structure) -> float:
        """The exact (hard-mask) cost of ``structure``; leaves it set on the model."""
        key = structure_key(structure)
        set_structure(self.algorithm, structure)
        if key not in self.costs:
            self.costs[key] = float(self.algorithm.estimator.estimate(self.resource, hard=True))
        return self.costs[key]

    def _scaled(self, structure: Structure, factor: float) -> Structure:
        scaled = {}
        for name, kept in structure.items():
            m = self.mutables[name]
            scaled[name] = min(m.num_elements, max(self.low[name], round(kept * factor)))
        return scaled

    def repair(self, structure: Structure) -> Optional[Structure]:
        """``structure`` itself when it is within the budget's band, else its kept counts scaled
        by the one factor (bisected) that brings the cost into the band; None if none does."""
        if self.lower <= self.cost(structure) <= self.upper:
            return structure
        low, high = 0.0, max(m.num_elements / max(structure[n], 1)
                             for n, m in self.mutables.items())
        for _ in range(24):
            middle = (low + high) / 2
            candidate = self._scaled(structure, middle)
            cost = self.cost(candidate)
            if self.lower <= cost <= self.upper:
                return candidate
            low, high = (middle, high) if cost < self.lower else (low, middle)
        return None

    # breeding ----------------------------------------------------------------------------------
    def _random(self) -> Structure:
        return sample_structure(self.algorithm, 'random', self.generator,
                                self.min_width_fraction)

    def _mutate(self, parent: Structure) -> Structure:
        child = dict(parent)
        for name, m in self.mutables.items():
            if float(torch.rand((), generator=self.generator)) < self.mutate_prob:
                child[name] = int(torch.randint(self.low[name], m.num_elements + 1, (1, ),
                                                generator=self.generator))
        return child

    def _crossover(self, first: Structure, second: Structure) -> Structure:
        return {name: (first if float(torch.rand((), generator=self.generator)) < 0.5
                       else second)[name] for name in self.mutables}

    def _pick(self, pool: List[Structure]) -> Structure:
        return pool[int(torch.randint(len(pool), (1, ), generator=self.generator))]

    def _fill(self, wanted: int, make: Callable[[], Structure], seen: set) -> List[Structure]:
        found = []
        for _ in range(wanted * self.max_tries):
            if len(found) == wanted:
                break
            candidate = self.repair(make())
            if candidate is not None and structure_key(candidate) not in seen:
                seen.add(structure_key(candidate))
                found.append(candidate)
        return found

    # the search --------------------------------------------------------------------------------
    def score(self, structure: Structure) -> float:
        key = structure_key(structure)
        if key not in self.scores:
            self.scores[key] = float(self.score_fn(structure))
        return self.scores[key]

    def run(self) -> dict:
        """Run the evolution.

        Returns:
            dict: ``structure`` (the best), ``score``, ``cost``, ``target``, ``evaluated`` (the
            number of distinct structures scored) and ``history`` (per generation: the best
            score and cost so far, and the generation's scores). The best structure is left set
            on the model.

        Raises:
            RuntimeError: no random structure could be repaired into the budget's band.
        """
        seen: set = set()
        population = self._fill(self.population_size, self._random, seen)
        if not population:
            raise RuntimeError(
                f'EvolutionSearch: no structure within {self.lower:.6g}..{self.upper:.6g} '
                f'{self.resource} was found in {self.population_size * self.max_tries} random '
                'draws; the budget is outside the search space (below its smallest or above '
                'its largest structure) or the band is too narrow for its granularity: raise '
                'the tolerance or change the target')
        parents: List[Structure] = []
        for generation in range(self.generations):
            scores = [self.score(s) for s in population]
            pool = {structure_key(s): s for s in parents + population}
            parents = sorted(pool.values(), key=self.score, reverse=True)[:self.num_parents]
            best = parents[0]
            self.history.append(dict(generation=generation, best_score=self.score(best),
                                     best_cost=self.cost(best), scores=scores))
            print_log(f'EvolutionSearch generation {generation}: {len(population)} candidates, '
                      f'best score {self.score(best):.4f} at {self.cost(best):.6g} '
                      f'{self.resource} (target {self.target:.6g})', logger='current')
            if generation + 1 == self.generations:
                break
            mutated = self._fill(self.num_mutation, lambda: self._mutate(self._pick(parents)),
                                 seen)
            crossed = self._fill(self.population_size - len(mutated),
                                 lambda: self._crossover(self._pick(parents),
                                                         self._pick(parents)), seen)
            population = mutated + crossed
            if not population:
                break
        best = parents[0]
        cost = self.cost(best)  # leaves it set
        return dict(structure=best, score=self.score(best), cost=cost, target=self.target,
                    evaluated=len(self.scores), history=self.history)

