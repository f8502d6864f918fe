# Copyright (c) mmdms contributors. All rights reserved.
"""mmpretrain's ``SwinTransformer`` and ``SwinTransformerV2`` backbones: their forwards reshape each
output to the width it was built with.

``SwinTransformer.forward`` turns each output stage's tokens into a feature map with
``out.view(-1, *hw_shape, self.num_features[i])``: the last stage's stream could not be pruned
(MMRazor's pruning check runs that forward on a pruned copy and it fails), and a static Swin
with a pruned last stage could not run. The copy's forward reads the width from the tokens;
the static model's ``num_features`` (V2: its stages' ``out_channels``) become the widths of its
sliced output norms.
"""
from typing import Dict

import torch
import torch.nn as nn
from mmpretrain.models.backbones import SwinTransformer, SwinTransformerV2
from mmpretrain.models.utils import resize_pos_embed

from mmdms.registry import ADAPTERS
from .base import FamilyAdapter


def swin_trace_forward(module: nn.Module, x: torch.Tensor) -> tuple:
    """``SwinTransformer.forward`` / ``SwinTransformerV2.forward``, with each output's width
    read from its tokens. V1 may down-sample after an output stage; V2's stages do it first.
    DaViT's forward is V1's without the absolute position embedding and its dropout."""
    v1 = not isinstance(module, SwinTransformerV2)
    x, hw_shape = module.patch_embed(x)
    if getattr(module, 'use_abs_pos_embed', False):
        x = x + resize_pos_embed(module.absolute_pos_embed, module.patch_resolution, hw_shape,
                                 module.interpolate_mode, module.num_extra_tokens)
    if hasattr(module, 'drop_after_pos'):
        x = module.drop_after_pos(x)
    outs = []
    for i, stage in enumerate(module.stages):
        if v1:
            x, hw_shape = stage(x, hw_shape, do_downsample=module.out_after_downsample)
        else:
            x, hw_shape = stage(x, hw_shape)
        if i in module.out_indices:
            out = getattr(module, f'norm{i}')(x)
            outs.append(out.view(-1, *hw_shape, out.shape[-1]).permute(0, 3, 1,
                                                                       2).contiguous())
        if v1 and stage.downsample is not None and not module.out_after_downsample:
            x, hw_shape = stage.downsample(x, hw_shape)
    return tuple(outs)


def output_norm_widths(module: nn.Module) -> Dict[int, int]:
    """Output stage index -> the width of its (sliced) output norm."""
    norms = {i: getattr(module, f'norm{i}', None) for i in module.out_indices}
    return {i: norm.normalized_shape[-1] for i, norm in norms.items()
            if isinstance(norm, nn.LayerNorm)}


@ADAPTERS.register_module()
class SwinTransformerAdapter(FamilyAdapter):
    """The stream of Swin's output stages (see the module docstring)."""

    module_type = SwinTransformer
    match_subclasses = False  # Swin-V2 and others have forwards of their own

    def trace_forward(self, module: nn.Module, x: torch.Tensor) -> tuple:
        return swin_trace_forward(module, x)

    def static_rule(self, module: nn.Module, name: str, subnet: Dict) -> None:
        for i, width in output_norm_widths(module).items():
            module.num_features[i] = width


@ADAPTERS.register_module()
class SwinTransformerV2Adapter(FamilyAdapter):
    """The stream of Swin-V2's output stages (see the module docstring)."""

    module_type = SwinTransformerV2
    match_subclasses = False

    def trace_forward(self, module: nn.Module, x: torch.Tensor) -> tuple:
        return swin_trace_forward(module, x)

    def static_rule(self, module: nn.Module, name: str, subnet: Dict) -> None:
        for i, width in output_norm_widths(module).items():
            module.stages[i].out_channels = width
