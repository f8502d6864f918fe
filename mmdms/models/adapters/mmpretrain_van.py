# Copyright (c) mmdms contributors. All rights reserved.
"""mmpretrain's ``VAN`` backbone: its forward reshapes each stage's tokens to the width its blocks
were built with (``x.reshape(-1, *hw_shape, block.out_channels)``).

MMRazor's pruning check runs that forward on a pruned copy, where the reshape fails, so every
stream of VAN (its patch embeddings' widths) failed the check and stayed fixed (82% of the zoo's
VAN-b0 searched). The copy's forward reads the width from the tokens; the static model's blocks
get the width of their stage's sliced norm.
"""
from typing import Dict

import torch
import torch.nn as nn
from mmpretrain.models.backbones import VAN

from mmdms.registry import ADAPTERS
from .base import FamilyAdapter


@ADAPTERS.register_module()
class VANAdapter(FamilyAdapter):
    """The streams of VAN's stages (see the module docstring)."""

    module_type = VAN
    match_subclasses = False

    def trace_forward(self, module: nn.Module, x: torch.Tensor) -> tuple:
        """``VAN.forward``, with each stage's width read from its tokens."""
        outs = []
        for i in range(module.num_stages):
            x, hw_shape = getattr(module, f'patch_embed{i + 1}')(x)
            for block in getattr(module, f'blocks{i + 1}'):
                x = block(x)
            x = getattr(module, f'norm{i + 1}')(x.flatten(2).transpose(1, 2))
            x = x.reshape(-1, *hw_shape, x.shape[-1]).permute(0, 3, 1, 2).contiguous()
            if i in module.out_indices:
                outs.append(x)
        return tuple(outs)

    def static_rule(self, module: nn.Module, name: str, subnet: Dict) -> None:
        for i in range(module.num_stages):
            norm = getattr(module, f'norm{i + 1}')
            for block in getattr(module, f'blocks{i + 1}'):
                block.out_channels = norm.normalized_shape[-1]
