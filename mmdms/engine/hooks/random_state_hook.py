# Copyright (c) mmdms contributors. All rights reserved.
"""Random number generator states in checkpoints, so that a resumed search reproduces."""
import random
from typing import Dict, Optional

import numpy as np
import torch
from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

#: Key of the states in an mmengine checkpoint.
CHECKPOINT_KEY = 'random_state'


def get_random_state() -> Dict:
    """The states of Python's, NumPy's and torch's (CPU and CUDA) global generators, as
    tensors and plain Python values (loadable by ``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = dict(python=random.getstate(), torch=torch.get_rng_state(),
                 numpy=dict(kind=kind, keys=torch.from_numpy(keys.astype(np.int64)),
                            pos=int(pos), has_gauss=int(has_gauss), gauss=float(gauss)))
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: Dict) -> None:
    """Restore what :func:`get_random_state` returned."""
    version, internal, gauss_next = state['python']
    random.setstate((version, tuple(internal), gauss_next))
    np_state = state['numpy']
    np.random.set_state((np_state['kind'], np_state['keys'].numpy().astype(np.uint32),
                         np_state['pos'], np_state['has_gauss'], np_state['gauss']))
    torch.set_rng_state(state['torch'].cpu())
    cuda = state.get('cuda')
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Makes a resumed run draw the same random numbers as an uninterrupted one.

    mmengine's resume restores weights, optimiser, schedulers and the message hub, and re-seeds
    the generators with the config's seed, so everything random after the resume point (random
    crops with ``num_workers=0``, dropout, drop path) differs from the uninterrupted run. This hook
    stores the global generators' states in every checkpoint and puts them back when training
    resumes from it (not for ``load_from`` without resume). It also keeps validation from
    consuming the training's random numbers (a data loader draws a seed when it starts), so a
    run that validates after a checkpoint and one resumed from it continue alike.

    Exact under data parallelism when all ranks share the seed (mmengine's default,
    ``randomness.diff_rank_seed=False``: every rank then holds the same states; the checkpoint
    stores rank 0's). With ``diff_rank_seed=True`` the per-rank states cannot be restored and the
    hook warns. Data-loader worker processes are re-seeded by mmengine every epoch, which resumes
    alike unless ``persistent_workers=True``.
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self._resumed_state: Optional[Dict] = None
        self._resumed_iter: Optional[int] = None
        self._val_state: Optional[Dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = get_random_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Applied in before_train: only a resume (not load_from) continues the saved run, and the
        # Runner builds the data loaders (which draw seeds) after loading.
        self._resumed_state = checkpoint.get(CHECKPOINT_KEY)
        self._resumed_iter = checkpoint.get('meta', {}).get('iter')

    def before_train(self, runner) -> None:
        state, self._resumed_state = self._resumed_state, None
        if state is None or not runner.iter or runner.iter != self._resumed_iter:
            return
        randomness = getattr(runner, '_randomness_cfg', None) or {}
        if get_world_size() > 1 and randomness.get('diff_rank_seed', False):
            print_log('RandomStateHook: with randomness.diff_rank_seed=True every rank has its '
                      'own random state and the checkpoint holds rank 0\'s only; the resumed '
                      'run keeps the re-seeded generators', logger='current', level=30)
            return
        set_random_state(state)

    def before_val(self, runner) -> None:
        self._val_state = get_random_state()

    def after_val(self, runner) -> None:
        if self._val_state is not None:
            set_random_state(self._val_state)
            self._val_state = None
