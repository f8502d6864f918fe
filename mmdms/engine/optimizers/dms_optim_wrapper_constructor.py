# Copyright (c) mmdms contributors. All rights reserved.
"""Structure parameters in their own group for optimiser constructors that do not read
``paramwise_cfg.custom_keys`` (mmyolo's ``YOLOv5OptimizerConstructor``)."""
import copy
from typing import Dict, Optional

import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

STRUCTURE_KEY = 'dms_ratio'


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class DMSOptimWrapperConstructor:
    """Builds the optimiser with ``base_constructor``, then puts every ``dms_ratio`` the base
    left out into one more parameter group, configured by the standard
    ``paramwise_cfg.custom_keys['dms_ratio']`` (``lr_mult``, ``decay_mult``).

    mmyolo's ``YOLOv5OptimizerConstructor`` groups parameters by module attribute (norm weights,
    other weights, biases) and ignores ``custom_keys``, so without this the structure parameters
    of a YOLOv8 search would not be optimised at all. The new group is appended, so group
    indices that mmyolo's ``YOLOv5ParamSchedulerHook`` relies on (bias group 2) are unchanged.

    Args:
        optim_wrapper_cfg (dict): the optimiser wrapper config.
        paramwise_cfg (dict, optional): ``base_constructor`` (default
            ``'DefaultOptimWrapperConstructor'``); the rest goes to the base constructor.
    """

    def __init__(self, optim_wrapper_cfg: Dict, paramwise_cfg: Optional[Dict] = None) -> None:
        paramwise_cfg = copy.deepcopy(dict(paramwise_cfg or {}))
        self.base_type = paramwise_cfg.pop('base_constructor', 'DefaultOptimWrapperConstructor')
        self.structure_cfg = dict(paramwise_cfg.get('custom_keys', {}).get(STRUCTURE_KEY, {}))
        if self.base_type != 'DefaultOptimWrapperConstructor':
            paramwise_cfg.pop('custom_keys', None)
        self.base = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
            type=self.base_type, optim_wrapper_cfg=optim_wrapper_cfg,
            paramwise_cfg=paramwise_cfg or None))

    def __call__(self, model: nn.Module) -> OptimWrapper:
        optim_wrapper = self.base(model)
        optimizer = optim_wrapper.optimizer
        grouped = {id(p) for group in optimizer.param_groups for p in group['params']}
        missing = [p for name, p in model.named_parameters()
                   if name.endswith(STRUCTURE_KEY) and p.requires_grad and id(p) not in grouped]
        if missing:
            defaults = optimizer.defaults
            group = dict(params=missing,
                         lr=defaults['lr'] * self.structure_cfg.get('lr_mult', 1.0))
            if 'weight_decay' in defaults:
                group['weight_decay'] = defaults['weight_decay'] * \
                    self.structure_cfg.get('decay_mult', 1.0)
            optimizer.add_param_group(group)
        return optim_wrapper
