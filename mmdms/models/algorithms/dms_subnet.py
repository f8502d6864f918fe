# Copyright (c) mmdms contributors. All rights reserved.
"""The static subnet a DMS search exported, as a model a config can build."""
from typing import Dict, Optional, Union

from mmengine.model import BaseModel
from mmrazor.models.algorithms import BaseAlgorithm
from mmrazor.registry import MODELS

from mmdms.structures import load_subnet, prune_to_subnet
from mmdms.models.adapters.network_forward import network_forward


def merge_data_preprocessor(architecture, data_preprocessor):
    """A config's top-level ``data_preprocessor`` (which the Runner hands to ``model``) belongs
    to the architecture, whose type supplies its default preprocessor type."""
    if isinstance(architecture, dict) and isinstance(data_preprocessor, dict) \
            and 'type' not in data_preprocessor:
        return dict(architecture, data_preprocessor=data_preprocessor), None
    return architecture, data_preprocessor


@MODELS.register_module()
class DMSSubnet(BaseAlgorithm):
    """The architecture pruned to a searched subnet: static, no masks, no tracing.

    Builds ``architecture`` at full (supernet) size, then applies ``subnet`` (the
    ``subnet.json`` that ``tools/export_subnet.py`` writes) with
    :func:`~mmdms.structures.prune_to_subnet`: layers are sliced to their kept channels,
    attentions keep their searched heads and head dims, removed blocks become identities.
    ``loss`` / ``predict`` / ``tensor`` run the architecture, so its evaluators work unchanged;
    parameters live under ``architecture.``, as in the search model.

    Args:
        architecture (dict | BaseModel): the supernet the subnet was searched on (its weights
            are replaced by the checkpoint, e.g. ``pruned.pth``, or initialised).
        subnet (str | dict): path of ``subnet.json``, or its content.
        data_preprocessor (dict, optional): defaults to the architecture's.
        init_cfg (dict, optional): initialisation config.
    """

    def __init__(self,
                 architecture: Union[BaseModel, Dict],
                 subnet: Union[str, Dict],
                 data_preprocessor: Optional[Dict] = None,
                 init_cfg: Optional[Dict] = None) -> None:
        architecture, data_preprocessor = merge_data_preprocessor(architecture,
                                                                  data_preprocessor)
        super().__init__(architecture, data_preprocessor, init_cfg)
        self.subnet = load_subnet(subnet) if isinstance(subnet, str) else dict(subnet)
        prune_to_subnet(self.architecture, self.subnet)

    def _forward(self, inputs, data_samples=None):
        """``tensor`` mode; without data samples, mmdms's network forward of the architecture
        (:func:`~mmdms.models.adapters.network_forward.network_forward`)."""
        return network_forward(self.architecture, inputs, data_samples)
