# Copyright (c) mmdms contributors. All rights reserved.
"""The DMS search model: a supernet (any mmpretrain / mmyolo model) and its DMSMutator."""
import contextlib
import copy
from typing import Dict, List, Optional, Union

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmrazor.models.algorithms import BaseAlgorithm
from mmrazor.registry import MODELS, TASK_UTILS
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmdms.models.adapters.network_forward import network_forward
from mmdms.models.mutables.dms_topk import masks_unrecorded


#: Scale of the logged ``r_c`` / ``r_t``: MACs and params in millions, latency in ms.
RESOURCE_LOG_SCALE = dict(macs=1e-6, params=1e-6, latency=1.0)


@MODELS.register_module()
class DMS(BaseAlgorithm):
    """Differentiable Model Scaling on ``architecture``.

    Builds the architecture (e.g. ``_base_.model`` of an mmpretrain config), then lets the
    :class:`~mmdms.models.DMSMutator` find its widths and depths and make its layers read their
    inputs through the soft masks. ``tensor`` and ``predict`` modes run the masked supernet;
    ``loss`` returns the architecture's task losses plus, once a target is set (by
    :class:`~mmdms.engine.ResourceLossHook`), ``loss_resource = lambda * log(r_c / r_t)`` when
    ``r_c > r_t`` (paper Eq. 5-7), with ``r_c`` from :class:`DMSResourceEstimator`. The
    importance update runs once per iteration in :class:`~mmdms.engine.DMSImportanceHook`.

    Pipelines (paper Table 1): DMS_np is the default (random init); DMS_p loads a pretrained
    supernet (``load_from``); DMS_p- also sets ``freeze_weights=True``: only the structure
    parameters learn, weights and BatchNorm statistics stay as loaded.

    Args:
        architecture (dict | BaseModel): the supernet.
        mutator (dict | nn.Module): the DMSMutator config.
        resource_estimator (dict): :class:`DMSResourceEstimator` config; its ``input_shape``
            defaults to the mutator's ``demo_input``.
        freeze_weights (bool): DMS_p-: train the structure parameters only.
        resource_value (str): ``'soft'`` (paper): ``r_c`` is the soft-mask count. ``'hard'``:
            ``r_c`` takes the value of the hard-mask count (the cost of the structure that will be
            exported) with the soft count's gradient (straight-through), so the search stops
            exactly when the exported model meets the target.
        importance_from_task_loss (bool): the Taylor importance sees ``dL/dm`` of the task
            loss alone: the resource loss reads its own copy of the soft masks
            (:func:`~mmdms.models.mutables.dms_topk.masks_unrecorded`), which trains the ratios
            as before. False (the paper's "training loss"): ``dL/dm`` of both, whose resource
            part is the same for every element of a width and so ranks by ``m`` itself.
        data_preprocessor (dict, optional): defaults to the architecture's.
        init_cfg (dict, optional): initialisation config.
    """

    def __init__(self,
                 architecture: Union[BaseModel, Dict],
                 mutator: Union[Dict, nn.Module] = dict(type='DMSMutator'),
                 resource_estimator: Dict = dict(type='DMSResourceEstimator'),
                 freeze_weights: bool = False,
                 resource_value: str = 'soft',
                 importance_from_task_loss: bool = False,
                 data_preprocessor: Optional[Dict] = None,
                 init_cfg: Optional[Dict] = None) -> None:
        if isinstance(architecture, dict) and isinstance(data_preprocessor, dict) \
                and 'type' not in data_preprocessor:
            # A config's top-level ``data_preprocessor`` (which the Runner hands to ``model``)
            # belongs to the architecture, whose type supplies its default preprocessor type.
            architecture = dict(architecture, data_preprocessor=data_preprocessor)
            data_preprocessor = None
        # kept to build the plain supernet again (the latency fit times it whole)
        self._architecture_cfg = copy.deepcopy(architecture) \
            if isinstance(architecture, dict) else None
        super().__init__(architecture, data_preprocessor, init_cfg)
        if isinstance(mutator, dict):
            mutator = MODELS.build(dict(mutator, _scope_=mutator.get('_scope_', 'mmrazor')))
        self.mutator = mutator
        self.mutator.prepare_from_supernet(self.architecture)
        #: The search space the mutator found (what the estimator, export and hooks read).
        self.space = self.mutator.space
        estimator_cfg = dict(resource_estimator)
        estimator_cfg.setdefault('_scope_', 'mmrazor')
        demo_input = getattr(self.mutator, 'parse_cfg', {}).get('demo_input')
        if 'input_shape' not in estimator_cfg and isinstance(demo_input, (tuple, list)):
            estimator_cfg['input_shape'] = tuple(demo_input)
        self.estimator = TASK_UTILS.build(estimator_cfg)
        self.estimator.prepare(self.architecture, self.space)
        #: Set by ResourceLossHook: what is constrained, the current target, the loss weight.
        self.resource_type = 'macs'
        self.resource_target: Optional[float] = None
        self.lambda_resource = 1.0
        #: Set through set_resource_constraint (by ResourceLossHook in the width-only phase with
        #: ``match_target``): penalise ``|log(r_c / r_t)|`` so the widths also grow back to a
        #: target the depth freeze undershot.
        self.resource_two_sided = False
        if resource_value not in ('soft', 'hard'):
            raise ValueError(f"resource_value must be 'soft' or 'hard', got '{resource_value}'")
        self.resource_value = resource_value
        self.importance_from_task_loss = importance_from_task_loss
        self.freeze_weights = freeze_weights
        if freeze_weights:
            for name, param in self.named_parameters():
                if not name.endswith('dms_ratio'):
                    param.requires_grad_(False)
            self.train(self.training)
        self._register_load_state_dict_pre_hook(self._load_plain_supernet_keys)

    def _load_plain_supernet_keys(self, state_dict: dict, prefix: str, *args) -> None:
        """Load a checkpoint of the plain supernet (``backbone.…``, as its own training saves
        it) into :attr:`architecture` (``architecture.backbone.…``): DMS_p's
        ``--cfg-options load_from=supernet.pth``.

        Without this, mmengine's non-strict ``load_from`` matched no key, warned, and the search
        started from random weights. A checkpoint of the search model itself (it has
        ``architecture.`` keys) loads as it is.
        """
        own = prefix + 'architecture.'
        keys = [k for k in state_dict if k.startswith(prefix)]
        if any(k.startswith(own) for k in keys):
            return
        architecture_keys = set(self.architecture.state_dict(keep_vars=True))
        plain = [k for k in keys if k[len(prefix):] in architecture_keys]
        if not plain:
            return
        for key in plain:
            state_dict[own + key[len(prefix):]] = state_dict.pop(key)
        print_log(f'Loading a plain supernet checkpoint: {len(plain)} of the architecture\'s '
                  f'{len(architecture_keys)} tensors found under their plain names',
                  logger='current')

    def train(self, mode: bool = True) -> 'DMS':
        super().train(mode)
        if getattr(self, 'freeze_weights', False):
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()  # DMS_p-: keep the loaded statistics
        return self

    def structure_parameters(self) -> List[nn.Parameter]:
        """The learnable ratios of the search space (the architecture parameters)."""
        return [m.dms_ratio for m in self.dms_mutables() if m.dms_ratio.requires_grad]

    def build_plain_architecture(self, pruned: bool = False) -> nn.Module:
        """The supernet again, built from the architecture config without any DMS machinery
        (plain layers, fresh weights), on the search model's device, in eval mode: what the
        latency fit times whole, as the exported model will run.

        Args:
            pruned (bool): prune it to the structure of the current hard masks (the static
                model the export would build, with fresh weights).

        Raises:
            ValueError: the DMS model was given a built architecture, not its config.
        """
        if self._architecture_cfg is None:
            raise ValueError(
                'DMS was given a built architecture module, so it cannot build the plain '
                'supernet the latency fit times whole. Give DMS the architecture as a config '
                'dict, or fit the latency yourself: model.estimator.fit_latency('
                'model.architecture, supernet=<the architecture without DMS ops>)')
        plain = MODELS.build(copy.deepcopy(self._architecture_cfg))
        if pruned:
            from mmdms.structures import prune_to_subnet, subnet_from_algorithm
            prune_to_subnet(plain, subnet_from_algorithm(self))
        return plain.to(next(self.architecture.parameters()).device).eval()

    def supernet_resource(self, resource: str = 'macs') -> float:
        """The exact cost of the whole supernet (every mask at 1)."""
        return float(self.estimator.estimate(resource, full=True))

    def set_resource_constraint(self, resource: str, target: Optional[float],
                                lambda_resource: float = 1.0, two_sided: bool = False) -> None:
        """Constrain ``resource`` to ``target`` (``None`` lifts the constraint).

        Args:
            resource (str): one of the estimator's ``resource_types``.
            target (float, optional): ``r_t`` in the resource's unit.
            lambda_resource (float): weight of ``loss_resource``.
            two_sided (bool): penalise ``|log(r_c / r_t)|``, also below the target (see
                :attr:`resource_two_sided`).
        """
        if resource not in self.estimator.resource_types:
            raise ValueError(f"Unknown resource type '{resource}': the estimator counts "
                             f'{self.estimator.resource_types}')
        if target is not None and not target > 0:
            raise ValueError(f'The resource target must be positive, got {target}')
        self.resource_type = resource
        self.resource_target = target
        self.lambda_resource = lambda_resource
        self.resource_two_sided = two_sided

    def resource_loss(self) -> Dict[str, Tensor]:
        """``loss_resource`` (Eq. 7) and the logged ``r_c`` / ``r_t``."""
        with masks_unrecorded() if self.importance_from_task_loss else contextlib.nullcontext():
            r_c = self.estimator.estimate(self.resource_type)
        if self.resource_value == 'hard':
            r_c = self.estimator.estimate(self.resource_type, hard=True) + (r_c - r_c.detach())
        r_t = self.resource_target
        if self.resource_two_sided:
            loss = self.lambda_resource * torch.log(r_c / r_t).abs()
        elif r_c.item() > r_t:
            loss = self.lambda_resource * torch.log(r_c / r_t)
        else:
            loss = r_c * 0.0  # keeps the graph (and data-parallel gradients) connected
        scale = RESOURCE_LOG_SCALE.get(self.resource_type, 1.0)
        return dict(loss_resource=loss, r_c=r_c.detach() * scale,
                    r_t=torch.tensor(r_t * scale))

    def _forward(self, inputs, data_samples=None):
        """``tensor`` mode; without data samples, mmdms's network forward of the architecture
        (:func:`~mmdms.models.adapters.network_forward.network_forward`)."""
        return network_forward(self.architecture, inputs, data_samples)

    def loss(self, inputs: Tensor, data_samples=None) -> Dict[str, Tensor]:
        losses = self.architecture(inputs, data_samples, mode='loss')
        if self.resource_target is not None:
            losses.update(self.resource_loss())
        return losses

    def dms_mutables(self) -> List[nn.Module]:
        """Every DMS mutable of the search space."""
        return self.space.dms_mutables()
