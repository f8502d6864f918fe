# Copyright (c) mmdms contributors. All rights reserved.
"""Stops a search at the first non-finite loss, before anything of that state is saved."""
import math
from typing import Dict, List, Optional, Sequence

import torch
from mmengine import dist
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


class NonFiniteLossError(FloatingPointError):
    """The training loss (or a weight about to be checkpointed) is NaN or infinite."""


def _scalars(outputs: Optional[dict]) -> Dict[str, float]:
    values = {}
    for key, value in (outputs or {}).items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            values[key] = float(value.detach())
        elif isinstance(value, (int, float)):
            values[key] = float(value)
    return values


def _structure_lr(runner, model) -> Optional[float]:
    """The current learning rate of the structure parameters (``dms_ratio``), if any."""
    ratios = {id(p) for p in getattr(model, 'structure_parameters', lambda: [])()}
    optimizer = getattr(getattr(runner, 'optim_wrapper', None), 'optimizer', None)
    for group in getattr(optimizer, 'param_groups', []):
        if any(id(p) in ratios for p in group['params']):
            return float(group['lr'])
    return None


@HOOKS.register_module()
class DMSNaNGuardHook(Hook):
    """Stops training with one clear message when the loss becomes NaN or infinite.

    After every iteration, before the importance update, the logger and the checkpoint hook
    (``priority='VERY_HIGH'``), it checks every scalar the model returned (``loss``, its parts,
    ``r_c``, ``r_t``). Under data parallelism the ranks agree with one collective of one flag per
    rank, so all of them stop at the same iteration (a NaN loss on one rank reaches every rank's
    weights through the gradient average). It also refuses to write a checkpoint holding a
    non-finite weight or buffer, so the last checkpoint on disk is always a good one to resume.

    The error names the epoch and iteration, the losses, the last good checkpoint and the likely
    causes: a structure learning rate (``lr_structure``) or resource loss weight
    (``lambda_resource``) too large for this model, or the weights' learning rate.
    """

    priority = 'VERY_HIGH'

    def after_train_iter(self, runner, batch_idx: int, data_batch: Optional[Sequence] = None,
                         outputs: Optional[dict] = None) -> None:
        values = _scalars(outputs)
        bad = not all(math.isfinite(v) for v in values.values())
        bad_ranks = [dist.get_rank()] if bad else []
        if dist.get_world_size() > 1:
            flags = torch.zeros(dist.get_world_size(), device=dist.get_comm_device())
            flags[dist.get_rank()] = float(bad)
            dist.all_reduce(flags, op='sum')
            bad_ranks = [r for r, flag in enumerate(flags.tolist()) if flag > 0]
        if bad_ranks:
            raise NonFiniteLossError(self._message(runner, batch_idx, values, bad_ranks))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        bad = [key for key, value in checkpoint.get('state_dict', {}).items()
               if isinstance(value, torch.Tensor) and value.is_floating_point()
               and not torch.isfinite(value).all()]
        if bad:
            shown = ', '.join(bad[:8]) + (f', ... ({len(bad) - 8} more)' if len(bad) > 8 else '')
            raise NonFiniteLossError(
                f'DMSNaNGuardHook: refusing to save a checkpoint at epoch {runner.epoch + 1}, '
                f'iteration {runner.iter + 1}: non-finite values in {shown}. '
                f'{self._last_good(runner)}')

    # message -----------------------------------------------------------------------------------
    @staticmethod
    def _last_good(runner) -> str:
        last = runner.message_hub.get_info('last_ckpt')
        if last:
            return (f'The last good checkpoint is {last}; continue from it with '
                    f'`tools/train.py CONFIG --resume {last}` once the cause is fixed.')
        return 'No checkpoint was saved before this point.'

    def _message(self, runner, batch_idx: int, values: Dict[str, float],
                 bad_ranks: List[int]) -> str:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        shown = ', '.join(f'{k}={v:.6g}' for k, v in values.items())
        where = f'epoch {runner.epoch + 1}, iteration {batch_idx + 1}'
        try:
            where += f' of {len(runner.train_dataloader)}'
        except TypeError:
            pass
        where += f' (iteration {runner.iter + 1} of the run)'
        if dist.get_world_size() > 1:
            where += f' on rank(s) {bad_ranks}'
        lines = [f'DMSNaNGuardHook: the loss is not finite at {where}: {shown or "no losses"}.',
                 'Training stopped before this state was logged, used for the importance or '
                 f'saved. {self._last_good(runner)}']
        if hasattr(model, 'dms_mutables'):
            lr_structure = _structure_lr(runner, model)
            lr = f'{lr_structure:.3g}' if lr_structure is not None else 'unknown'
            lam = getattr(model, 'lambda_resource', None)
            lines.append(
                f'Likely causes: the structure learning rate (lr_structure, now {lr}) or the '
                f'resource loss weight (lambda_resource, now {lam}) is too large for this '
                'model, or the weights\' learning rate is. Lower lambda_resource first, then '
                'lr_structure (paper App. A.3.5; docs/user_guide.md), or clip gradients '
                '(optim_wrapper.clip_grad).')
        else:
            lines.append('Likely causes: a learning rate too large for this model, or bad '
                         'input data; lower the learning rate or clip gradients '
                         '(optim_wrapper.clip_grad).')
        return '\n'.join(lines)
