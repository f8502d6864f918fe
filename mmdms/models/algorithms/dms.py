# Copyright (c) mmdms contributors. All rights reserved.
"""The DMS search model: a supernet (any mmpretrain / mmyolo model) and its DMSMutator."""
from typing import Dict, List, Optional, Union

from mmengine.model import BaseModel
from mmrazor.models.algorithms import BaseAlgorithm
from mmrazor.registry import MODELS
from torch import nn


@MODELS.register_module()
class DMS(BaseAlgorithm):
    """Differentiable Model Scaling on ``architecture``.

    Builds the architecture (e.g. ``_base_.model`` of an mmpretrain config), then lets the
    :class:`~mmdms.models.DMSMutator` find its widths and depths and make its layers read their
    inputs through the soft masks. ``tensor`` and ``predict`` modes run the masked supernet;
    ``loss`` returns the architecture's task losses. The importance update runs once per
    iteration in :class:`~mmdms.engine.DMSImportanceHook`.

    Args:
        architecture (dict | BaseModel): the supernet.
        mutator (dict | nn.Module): the DMSMutator config.
        data_preprocessor (dict, optional): defaults to the architecture's.
        init_cfg (dict, optional): initialisation config.
    """

    def __init__(self,
                 architecture: Union[BaseModel, Dict],
                 mutator: Union[Dict, nn.Module] = dict(type='DMSMutator'),
                 data_preprocessor: Optional[Dict] = None,
                 init_cfg: Optional[Dict] = None) -> None:
        if isinstance(architecture, dict) and isinstance(data_preprocessor, dict) \
                and 'type' not in data_preprocessor:
            # A config's top-level ``data_preprocessor`` (which the Runner hands to ``model``)
            # belongs to the architecture, whose type supplies its default preprocessor type.
            architecture = dict(architecture, data_preprocessor=data_preprocessor)
            data_preprocessor = None
        super().__init__(architecture, data_preprocessor, init_cfg)
        if isinstance(mutator, dict):
            mutator = MODELS.build(dict(mutator, _scope_=mutator.get('_scope_', 'mmrazor')))
        self.mutator = mutator
        self.mutator.prepare_from_supernet(self.architecture)

    def dms_mutables(self) -> List[nn.Module]:
        """Every DMS mutable of the search space."""
        return self.mutator.dms_mutables()
