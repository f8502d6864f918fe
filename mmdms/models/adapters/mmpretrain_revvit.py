# Copyright (c) mmdms contributors. All rights reserved.
"""mmpretrain's reversible ViT (RevViT): a traceable layer, and the search model's backward.

``RevTransformerEncoderLayer.forward`` computes ``Y1 = X1 + F(X2)``, ``Y2 = X2 + G(Y1)``
(``F``: ``ln1`` then ``attn``; ``G``: ``ln2`` then ``ffn``), re-seeding the global RNG before
each stochastic part so that its backward can recompute them, and builds its drop path anew in
every call: ``build_dropout(self.drop_path_cfg)(f_x2)``. That new ``DropPath`` is no submodule
of the model, so torch.fx's ``call_module`` fails on it (``NameError: module is not installed
as a submodule``), on the concrete tracer's second try too: every layer was untraceable. The
trace forward below computes the same function with ``mmcv``'s functional ``drop_path`` (the
same drop, without a module) and without the seeding (which only makes a training forward
repeatable).

The backbone concatenates the embedded tokens with themselves, ``cat([x, x])``, runs the layers
on the two halves (``X1 = X2 = x``) and normalises their concatenation ``[Y1 | Y2]``
(``ln1`` over ``2 C``), which ``TwoStreamFusion('concat')`` splits and concatenates again. As
both streams start as the same tensor and each layer adds to each stream a function of the
other, the graph ties them: one width (the patch embedding's) runs through both streams and
both halves of the final norm and the head's input.

The backbone's training forward runs its layers inside ``RevBackProp``, an autograd function
whose backward recomputes each layer's activations and calls ``backward()`` on them layer by
layer: the parameters' gradients (the soft masks' ratios among them) are accumulated as a side
effect of the backward, not carried by the autograd graph. ``torch.autograd.grad(loss,
ratios)`` then gets no gradient for any ratio the task loss reaches, and each mask's Taylor
hook would see its gradient in pieces (one per layer's ``F`` and ``G`` backward) and average
their squares instead of squaring their sum. The search model therefore runs the backbone's
own ``_forward_vanilla_bp`` path (``no_custom_backward = True``, set when its space is built):
the same outputs, gradients through the ordinary graph. The static model built at export
keeps the reversible backward of its config for retraining.
"""
from typing import Dict

import torch
import torch.nn as nn
from mmcv.cnn.bricks.drop import drop_path
from mmpretrain.models.backbones.revvit import (RevTransformerEncoderLayer,
                                                RevVisionTransformer)

from mmdms.registry import ADAPTERS
from .base import FamilyAdapter


def rev_layer_forward(layer: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> tuple:
    """``RevTransformerEncoderLayer.forward`` without building a module in the call."""
    prob = layer.drop_path_cfg['drop_prob']
    y1 = x1 + drop_path(layer.attn(layer.ln1(x2)), prob, layer.training)
    y2 = x2 + drop_path(layer.ffn(layer.ln2(y1)), prob, layer.training)
    return y1, y2


@ADAPTERS.register_module()
class RevTransformerEncoderLayerAdapter(FamilyAdapter):
    """RevViT's reversible layer: a forward torch.fx can trace (see the module docstring)."""

    module_type = RevTransformerEncoderLayer

    def trace_forward(self, module: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> tuple:
        return rev_layer_forward(module, x1, x2)


@ADAPTERS.register_module()
class RevVisionTransformerAdapter(FamilyAdapter):
    """RevViT's backbone: searched with the ordinary backward (see the module docstring). It
    builds no width: the tracer enters it (in eval mode, where it takes the vanilla path) and
    finds them all."""

    module_type = RevVisionTransformer
    build_after_trace = True

    def build_space(self, model: nn.Module, name: str, space, width_args: Dict) -> None:
        model.get_submodule(name).no_custom_backward = True
