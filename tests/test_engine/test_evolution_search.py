# Copyright (c) mmdms contributors. All rights reserved.
"""EvolutionSearch: every structure it scores, and the best, cost within the budget's band
(counted exactly by the DMS estimator); the search is deterministic given its seed; a budget
outside the space fails with one clear error."""
import pytest
from oneshot_test_utils import tiny_evolution_config

from mmdms.apis import build_search_model
from mmdms.engine.evolution_search import EvolutionSearch
from mmdms.models.space_structure import (get_structure, sample_structure, set_structure,
                                          structure_mutables)


@pytest.fixture(scope='module')
def model():
    return build_search_model(tiny_evolution_config())


def widths_score(structure):
    """A deterministic stand-in for held-out accuracy: prefers deep, narrow-early structures."""
    return sum(kept * (i + 1) for i, (_, kept) in enumerate(sorted(structure.items())))


def test_the_best_and_every_scored_structure_meet_the_budget(model):
    supernet = model.supernet_resource('macs')
    target = 0.5 * supernet
    scored = []
    mutables = structure_mutables(model)

    def score(structure):
        for name, kept in structure.items():  # within the one-shot supernet's range
            if name.startswith('width:'):
                assert kept >= 0.2 * mutables[name].num_elements
        set_structure(model, structure)
        scored.append(model.estimator.estimate('macs', hard=True).item())
        return widths_score(structure)

    search = EvolutionSearch(model, score, target, tolerance=0.02, population_size=8,
                             generations=3, num_parents=3, num_mutation=4, seed=1,
                             min_width_fraction=0.2)
    found = search.run()
    assert len(scored) == found['evaluated'] > 8  # the later generations bred new structures
    assert all(abs(macs / target - 1) <= 0.02 for macs in scored)
    assert abs(found['cost'] / target - 1) <= 0.02
    assert get_structure(model) == found['structure']  # left set on the model
    assert model.estimator.estimate('macs', hard=True).item() == found['cost']
    assert found['score'] == max(search.scores.values())
    bests = [h['best_score'] for h in found['history']]
    assert bests == sorted(bests)  # the parents are the best so far

    again = EvolutionSearch(model, widths_score, target, tolerance=0.02, population_size=8,
                            generations=3, num_parents=3, num_mutation=4, seed=1,
                            min_width_fraction=0.2).run()
    assert again['structure'] == found['structure']


def test_a_budget_outside_the_space_says_so(model):
    set_structure(model, sample_structure(model, 'min'))
    smallest = model.estimator.estimate('macs', hard=True).item()
    search = EvolutionSearch(model, widths_score, 0.5 * smallest, population_size=2,
                             num_parents=1, num_mutation=1, max_tries=2)
    with pytest.raises(RuntimeError, match='outside the search space'):
        search.run()


def test_structures_name_every_width_and_depth(model):
    names = set(structure_mutables(model))
    assert {n.split(':')[0] for n in names} == {'width', 'depth'}
    assert len(names) == len(model.space.widths) + len(model.space.stages)
    smallest = sample_structure(model, 'min')
    set_structure(model, smallest)
    assert get_structure(model) == smallest
    with pytest.raises(KeyError, match='missing'):
        set_structure(model, dict(list(smallest.items())[1:]))
