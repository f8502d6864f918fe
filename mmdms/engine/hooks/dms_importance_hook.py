# Copyright (c) mmdms contributors. All rights reserved.
"""Updates DMS element importance once per training iteration, identically on every rank."""
from typing import Optional, Sequence

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from mmdms.models.utils import sync_importance


@HOOKS.register_module()
class DMSImportanceHook(Hook):
    """Folds each mutable's statistic of the iteration into its importance (paper Eq. 4).

    Runs after the optimiser step of every iteration and before the checkpoint hook, so a
    checkpoint holds the importance of all iterations it covers. Under data parallelism the
    statistics of all ranks are averaged with one collective (:func:`sync_importance`); then each
    ratio is projected back onto its range. Works for any model exposing ``dms_mutables()``.
    """

    priority = 'ABOVE_NORMAL'

    def after_train_iter(self, runner, batch_idx: int, data_batch: Optional[Sequence] = None,
                         outputs: Optional[dict] = None) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        sync_importance(model.dms_mutables())
