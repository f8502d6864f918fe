# Copyright (c) mmdms contributors. All rights reserved.
"""Keeps a weight EMA from averaging the DMS structure."""
from mmengine.hooks import EMAHook
from torch import nn


def sync_structure_into_ema(runner, model: nn.Module) -> int:
    """Copy the live structure into the averaged model of every mmengine ``EMAHook``.

    An EMA of the weights must not average the structure parameters (the ratios would lag
    behind the ones the loss sees) nor the mutables' state (importance, frozen depth), which
    mmyolo's EMA averages as buffers. Call it after the EMA update of each iteration.

    Args:
        runner (Runner): the runner whose hooks are searched for ``EMAHook``.
        model (nn.Module): the (unwrapped) DMS search model.

    Returns:
        int: how many tensors were copied.
    """
    copied = 0
    structure = None
    for hook in runner.hooks:
        if not (isinstance(hook, EMAHook) and hasattr(hook, 'ema_model')):
            continue
        if structure is None:
            structure = {name: value for name, value in model.state_dict(keep_vars=True).items()
                         if name.startswith('mutator.') or name.endswith('dms_ratio')}
        averaged = hook.ema_model.module.state_dict(keep_vars=True)
        for name, value in structure.items():
            if name in averaged:
                averaged[name].data.copy_(value.data)
                copied += 1
    return copied
