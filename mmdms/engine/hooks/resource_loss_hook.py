# Copyright (c) mmdms contributors. All rights reserved.
"""Steps the resource target of a DMS search (paper App. A.1.2, Eq. 10) and logs the search."""
import os.path as osp
from typing import Optional, Sequence, Union

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop

from mmdms.engine.ema_structure_sync import sync_structure_into_ema
from mmdms.models.task_modules import LATENCY_META_KEY, LatencyModel, known_resource_types
from mmdms.models.utils import fit_latency_and_broadcast, land_on_target
from mmdms.ops import resource_target_at
from mmdms.utils import parse_resource

__all__ = ['ResourceLossHook', 'parse_resource']  # parse_resource: its former home


@HOOKS.register_module()
class ResourceLossHook(Hook):
    """Steps the DMS model's resource target ``r_t`` and logs the search.

    Before every epoch (iteration for an iteration-based loop) it sets the model's constraint
    to :func:`mmdms.ops.resource_target_at`, Eq. 10: ``r_t`` decays geometrically from the
    supernet's cost to ``r_final`` over the training minus the width-only phase. In the
    width-only phase (the last ``width_only_epochs`` / ``_iters``) ``r_t = r_final`` and the
    depth masks are frozen hard. After every iteration it logs the depth of every stage
    (``r_c``, ``r_t`` and ``loss_resource`` come with the losses; MACs / params in millions,
    latency in ms).

    Set-up and upkeep it delegates: the target is checked against the supernet before training;
    a latency target first fits the latency model
    (:func:`~mmdms.models.utils.fit_latency_and_broadcast`: every conv / linear timed over a
    grid of widths, then the whole plain supernet and a half-width static model timed so that a
    target in ms is the measured latency of the exported model), which checkpoints carry in
    their ``meta`` (a resumed search and the export use the same one); a weight EMA (mmengine
    ``EMAHook``) is kept from averaging the structure
    (:func:`~mmdms.engine.sync_structure_into_ema`); the searched structure is drawn at the end
    (:func:`~mmdms.visualization.plot_search_structure`).

    Args:
        resource (str): ``'macs'``, ``'params'`` or ``'latency'``.
        target (str | float, optional): absolute final target, e.g. ``'0.39G'``, ``'5.3M'``,
            ``'3ms'`` or a number in the resource's unit.
        target_ratio (float, optional): final target as a fraction of the supernet's cost.
            Exactly one of ``target`` and ``target_ratio``.
        lambda_resource (float): weight of ``loss_resource``. Defaults to 1 (paper).
        width_only_epochs (int): epochs at the end searching width only (epoch-based loops).
        width_only_iters (int): the same for iteration-based loops.
        latency_fit (dict, optional): arguments of the latency fit (``fractions``,
            ``repeats``, ``warmup``, ``supernet_repeats``, ``reduce_to``, ``correction``:
            ``'per_layer'`` by default, ``'scale'``, ``'offset'`` or ``'none'``; see
            :meth:`~mmdms.models.task_modules.DMSResourceEstimator.fit_latency`).
        save_structure (bool): at the end of the search, draw the searched structure (hard
            masks) into ``work_dir/structure.png`` (like the paper's Fig. 4). Defaults to True.
        match_target (bool): in the width-only phase, make the loss two-sided,
            ``lambda |log(r_c / r_t)|``, so that widths also grow when freezing the depth left
            the model under the target (an mmdms extension; the paper's loss is one-sided, the
            default).
        land_within (float, optional): after the last epoch (iteration), if the hard cost of the
            searched structure is further than this fraction from the final target, move single
            elements of the widths until it is within
            (:func:`~mmdms.models.utils.land_on_target`; an mmdms extension: on a small
            supernet one element can be several percent of the budget). Before the last
            checkpoint is written, so the export sees the landed structure. None (default): the
            structure is left as searched.
    """

    priority = 'LOW'  # after EMAHook (NORMAL) in after_train_iter

    def __init__(self,
                 resource: str = 'macs',
                 target: Union[str, float, None] = None,
                 target_ratio: Optional[float] = None,
                 lambda_resource: float = 1.0,
                 width_only_epochs: int = 0,
                 width_only_iters: int = 0,
                 latency_fit: Optional[dict] = None,
                 match_target: bool = False,
                 save_structure: bool = True,
                 land_within: Optional[float] = None) -> None:
        if resource not in known_resource_types():
            raise ValueError(f"ResourceLossHook: unknown resource '{resource}'; supported: "
                             f'{", ".join(known_resource_types())} (an estimator subclass '
                             'registered in TASK_UTILS adds more)')
        if (target is None) == (target_ratio is None):
            raise ValueError('ResourceLossHook needs exactly one of target (absolute, e.g. '
                             "'0.39G') and target_ratio (a fraction of the supernet's cost)")
        self.resource = resource
        self.final_target = None if target is None else parse_resource(target, resource)
        self.target_ratio = target_ratio
        if (self.final_target is not None and self.final_target <= 0) or \
                (target_ratio is not None and target_ratio <= 0):
            raise ValueError(f'The resource target must be positive, got '
                             f'{target if target is not None else target_ratio}')
        if lambda_resource <= 0:
            raise ValueError(f'lambda_resource must be positive, got {lambda_resource}')
        self.lambda_resource = lambda_resource
        self.width_only_epochs = width_only_epochs
        self.width_only_iters = width_only_iters
        self.latency_fit = dict(latency_fit or {})
        self.match_target = match_target
        self.save_structure = save_structure
        if land_within is not None and not 0 < land_within < 1:
            raise ValueError(f'ResourceLossHook: land_within must be in (0, 1), e.g. 0.02, got '
                             f'{land_within}')
        self.land_within = land_within
        self.supernet_cost: Optional[float] = None

    # set-up ------------------------------------------------------------------------------------
    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def before_train(self, runner) -> None:
        model = self._model(runner)
        if not hasattr(model, 'set_resource_constraint'):
            raise TypeError(f'ResourceLossHook needs a DMS search model, got '
                            f'{type(model).__name__}')
        if self.resource == 'latency' and model.estimator.latency_model is None:
            fit_args = dict(self.latency_fit)
            correction = fit_args.setdefault('correction', 'per_layer')
            supernet = model.build_plain_architecture if correction != 'none' else None
            if correction == 'per_layer':
                fit_args['reduced'] = lambda: model.build_plain_architecture(pruned=True)
            fit_latency_and_broadcast(model.estimator, model.architecture, supernet=supernet,
                                      **fit_args)
            self._log_latency_fit(runner, model.estimator.latency_model)
        self.supernet_cost = model.supernet_resource(self.resource)
        final = self.final_target if self.final_target is not None \
            else self.target_ratio * self.supernet_cost
        overhead = getattr(model.estimator.latency_model, 'overhead_ms', 0.0) \
            if self.resource == 'latency' else 0.0
        if final <= overhead:
            raise ValueError(
                f'The latency target {final:.4g} ms is not above the constant overhead '
                f'{overhead:.4g} ms of the latency model (correction=\'offset\'): no structure '
                "can meet it. Raise the target, or use latency_fit=dict(correction='scale').")
        if final >= self.supernet_cost:
            raise ValueError(
                f'The {self.resource} target {final:.6g} is not below the supernet\'s '
                f'{self.supernet_cost:.6g}: there is nothing to search. Lower the target '
                '(or use target_ratio < 1), or enlarge the supernet.')
        self.final = final
        loop = runner.train_loop
        # mmengine's IterBasedTrainLoop has max_epochs too (always 1): counting its epochs
        # would apply the final target at once and never enter the width-only phase
        self.by_epoch = hasattr(loop, 'max_epochs') and not isinstance(loop, IterBasedTrainLoop)
        total = loop.max_epochs if self.by_epoch else loop.max_iters
        width_only = self.width_only_epochs if self.by_epoch else self.width_only_iters
        self.decay_steps = total - width_only
        if self.decay_steps < 1:
            unit = 'epochs' if self.by_epoch else 'iterations'
            raise ValueError(f'ResourceLossHook: {width_only} width-only {unit} leave no '
                             f'{unit} of the {total} to decay the target over')
        model.set_resource_constraint(self.resource, self.target_at(0), self.lambda_resource)

    @staticmethod
    def _log_latency_fit(runner, fitted) -> None:
        if fitted is None:
            return
        measured = 'not measured' if fitted.supernet_ms is None else \
            f'{fitted.supernet_ms:.4g} ms measured'
        runner.logger.info(
            f'DMS latency model ({fitted.device}, {fitted.threads} thread(s)): per-layer sum '
            f'{fitted.layers_ms:.4g} ms for the supernet, {measured}; correction '
            f'{fitted.correction}: scale {fitted.scale:.4g}, overhead {fitted.overhead_ms:.4g} '
            f'ms, per layer {fitted.per_layer_ms:.4g} ms (narrower model: {fitted.reduced_ms})')

    # checkpoints -------------------------------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        fitted = self._model(runner).estimator.latency_model
        if fitted is not None:
            checkpoint.setdefault('meta', {})[LATENCY_META_KEY] = fitted.to_dict()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved = checkpoint.get('meta', {}).get(LATENCY_META_KEY)
        # a resumed search keeps the r_c it had, no new timing; load_from (e.g. on another
        # machine) times this one
        if saved is not None and getattr(runner, '_resume', False):
            self._model(runner).estimator.latency_model = LatencyModel.from_dict(saved)

    # schedule ----------------------------------------------------------------------------------
    def target_at(self, step: int) -> float:
        """``r_t`` during epoch / iteration ``step`` (0-based), Eq. 10."""
        return resource_target_at(step, self.decay_steps, self.supernet_cost, self.final)

    def _enter(self, runner, step: int) -> None:
        model = self._model(runner)
        width_only = step >= self.decay_steps
        model.set_resource_constraint(self.resource, self.target_at(step), self.lambda_resource,
                                      two_sided=width_only and self.match_target)
        if width_only:
            for mutable in model.space.depth_mutables():
                mutable.freeze()

    def before_train_epoch(self, runner) -> None:
        if self.by_epoch:
            self._enter(runner, runner.epoch)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if not self.by_epoch:
            self._enter(runner, runner.iter)

    # landing -----------------------------------------------------------------------------------
    def after_train_epoch(self, runner) -> None:
        if self.by_epoch and runner.epoch + 1 == runner.train_loop.max_epochs:
            self._land(runner)

    def _land(self, runner) -> None:
        """Bring the searched structure within ``land_within`` of the final target (runs
        before CheckpointHook, whose priority is lower)."""
        if self.land_within is None:
            return
        model = self._model(runner)
        widths = {key: group.mutable for key, group in model.space.widths.items()}
        landing = land_on_target(
            widths, lambda: float(model.estimator.estimate(self.resource, hard=True)),
            self.final, self.land_within)
        if not landing.moves and landing.landed:
            return
        message = f'DMS landing on the {self.resource} target: {landing.describe()}'
        if landing.landed:
            runner.logger.info(message)
        else:
            runner.logger.warning(
                message + '. No single-element move gets closer without jumping over the band, '
                'or no width can move further: widen land_within, search with finer widths (a '
                'smaller step), or, if every width is at its limit, change the target.')
        sync_structure_into_ema(runner, model)

    def after_train(self, runner) -> None:
        if self.save_structure and is_main_process():
            from mmdms.visualization import plot_search_structure
            path = plot_search_structure(self._model(runner),
                                         osp.join(runner.work_dir, 'structure.png'))
            runner.logger.info(f'DMS: the searched structure is drawn in {path}')

    # logging and EMA ---------------------------------------------------------------------------
    def after_train_iter(self, runner, batch_idx: int, data_batch: Optional[Sequence] = None,
                         outputs: Optional[dict] = None) -> None:
        model = self._model(runner)
        hub = runner.message_hub
        for key, stage in model.space.stages.items():
            hub.update_scalar(f'train/depth/{key}', stage.mutable.num_kept)
        sync_structure_into_ema(runner, model)
        if not self.by_epoch and runner.iter + 1 == runner.train_loop.max_iters:
            self._land(runner)
