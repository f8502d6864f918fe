# Copyright (c) mmdms contributors. All rights reserved.
"""The latency model is fitted once, on the main process (which alone builds and times the whole
supernet), and every rank uses that one, correction included."""
import os

import torch
import torch.distributed as torch_dist
import torch.nn as nn

from mmdms.models.utils import fit_latency_and_broadcast
from mmdms.utils import release_process_group
from dms_test_utils import spawn_ranks


class StubEstimator:
    """Records its fits; the 'fitted model' says which rank measured it."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.fits = []
        self.latency_model = None

    def fit_latency(self, model, supernet=None, **kwargs) -> None:
        self.fits.append(dict(kwargs, supernet=type(supernet).__name__))
        self.latency_model = [('measured on rank', self.rank), ('supernet', supernet is not None)]


def test_one_process_fits_with_the_arguments():
    estimator = StubEstimator(0)
    fit_latency_and_broadcast(estimator, nn.Linear(2, 2), repeats=3)
    assert estimator.fits == [dict(repeats=3, supernet='NoneType')]
    fit_latency_and_broadcast(estimator, nn.Linear(2, 2), supernet=lambda: nn.Conv2d(1, 1, 1),
                              correction='scale')
    assert estimator.fits[1] == dict(correction='scale', supernet='Conv2d')
    assert estimator.latency_model == [('measured on rank', 0), ('supernet', True)]


def _supernet_built_on(rank: int, out_dir: str):
    def build():
        open(os.path.join(out_dir, f'built_on_{rank}'), 'w').close()
        return nn.Linear(2, 2)
    return build


def _fit_on_rank(rank: int, world: int, out_dir: str) -> None:
    torch_dist.init_process_group('gloo', init_method=f'file://{out_dir}/rendezvous', rank=rank,
                                  world_size=world)
    estimator = StubEstimator(rank)
    fit_latency_and_broadcast(estimator, nn.Linear(2, 2), repeats=1,
                              supernet=_supernet_built_on(rank, out_dir))
    torch.save(dict(fits=len(estimator.fits), model=estimator.latency_model),
               os.path.join(out_dir, f'rank{rank}.pth'))
    release_process_group()


def test_two_gloo_ranks_use_the_main_process_fit(tmp_path):
    spawn_ranks(_fit_on_rank, args=(2, str(tmp_path)))
    r0, r1 = (torch.load(tmp_path / f'rank{r}.pth', weights_only=False) for r in (0, 1))
    assert (r0['fits'], r1['fits']) == (1, 0)  # only the main process measures
    assert r0['model'] == r1['model'] == [('measured on rank', 0), ('supernet', True)]
    # only the main process builds the supernet it times whole
    assert sorted(p.name for p in tmp_path.glob('built_on_*')) == ['built_on_0']
