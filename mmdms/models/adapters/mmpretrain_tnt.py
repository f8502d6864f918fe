# Copyright (c) mmdms contributors. All rights reserved.
"""mmpretrain's Transformer in Transformer (``TNT``): its layers add the pixel stream into the
patch tokens in place.

``TnTLayer.forward`` adds the projected pixel embeddings to the patch tokens after the class
token with an item assignment, ``patch_embed[:, 1:] = patch_embed[:, 1:] + ...``. torch.fx's
proxies have no ``__setitem__``, so the channel tracer could not enter any ``TnTLayer``, even
with its control flow run on the demo input (``UntraceableModuleError``: TNT did not build).
The copy's forward computes the same tokens out of place: it adds the projected pixels, padded
with a zero token in front for the class token. Its attentions are
``torch.nn.MultiheadAttention`` s, whose streams their layer rule searches
(:mod:`mmdms.models.layer_rules.multihead_attention`).

The inner (pixel) stream stays fixed: the channel graph ties it to the model's input
(``PixelEmbed`` reshapes with sizes read from the image). It should stay so: each layer's
``projection`` reads it flattened with the pixel positions position-major (``(P, C)`` to
``P C``), which MMRazor's channel graph records as an expansion of each channel to ``P``
consecutive features (channel-major, :class:`~mmdms.models.mutables.ExpandedMutableChannel`):
that would mask the wrong features.
"""
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.backbones.tnt import TnTLayer
from torch import Tensor

from mmdms.registry import ADAPTERS
from .base import FamilyAdapter


@ADAPTERS.register_module()
class TnTLayerAdapter(FamilyAdapter):
    """``TnTLayer`` (see the module docstring)."""

    module_type = TnTLayer
    match_subclasses = False

    def trace_forward(self, module: nn.Module, pixel_embed: Tensor,
                      patch_embed: Tensor) -> tuple:
        """``TnTLayer.forward`` without the item assignment: the projected pixels, a zero
        token padded in front of them for the class token, are added to the tokens. (Not a
        concatenation of the class token with the updated patch tokens: the channel graph
        recomputes the widths into a concatenation along every path, which for one per layer
        took the zoo's 12-layer TNT-S more than ten minutes.)"""
        pixel_embed = module.inner_block(pixel_embed)
        B, N, _ = patch_embed.size()
        patches = module.projection(module.norm_proj(pixel_embed).reshape(B, N - 1, -1))
        patch_embed = patch_embed + F.pad(patches, (0, 0, 1, 0))
        return pixel_embed, module.outer_block(patch_embed)
