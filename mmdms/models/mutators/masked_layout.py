# Copyright (c) mmdms contributors. All rights reserved.
"""Which DMS mask acts on which axis of which layer: the one map that both the resource
estimator (expected widths from soft masks) and the subnet export (kept indices from hard masks)
read, so that the two can never disagree about the structure.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import torch.nn as nn
from torch import Tensor

from mmdms.models.mutables import DMSMutableBlocks, DMSMutableChannel

#: ``fn(hard) -> mask`` over one axis of a layer; ``None`` means every channel is kept.
MaskFn = Callable[[bool], Optional[Tensor]]


def no_mask(hard: bool) -> None:
    return None


def mutable_mask(mutable: DMSMutableChannel) -> MaskFn:
    """The mask function of one width mutable."""
    return lambda hard: mutable.hard_mask if hard else mutable.soft_mask


def container_mask(layer: nn.Module, attr: str) -> MaskFn:
    """The mask function of a DMS op's ``in_channels`` / ``out_channels`` container."""
    container = layer.get_mutable_attr(attr) if hasattr(layer, 'get_mutable_attr') else None
    if container is None or not hasattr(container, 'mask'):
        return no_mask
    return container.mask


@dataclass
class LayerMasks:
    """The masks on a layer's input channels and output channels."""
    in_mask: MaskFn = no_mask
    out_mask: MaskFn = no_mask


@dataclass
class AttentionMasks:
    """The searched heads and head dims of one attention (its ``softmax(q k^T) v`` cost)."""
    heads: DMSMutableChannel
    qk_dims: DMSMutableChannel
    v_dims: DMSMutableChannel


@dataclass
class MaskedLayout:
    """The DMS masks of a prepared supernet, by module name.

    Attributes:
        layers: conv / linear / norm layers with at least one masked axis.
        attentions: attentions whose heads and head dims are searched.
        params: parameters owned by no layer (e.g. a ViT's ``cls_token``, ``pos_embed``) whose
            last axis is a searched width.
        blocks: every depth-searched block: its stage's mutable and its index in the stage.
    """
    layers: Dict[str, LayerMasks] = field(default_factory=dict)
    attentions: Dict[str, AttentionMasks] = field(default_factory=dict)
    params: Dict[str, MaskFn] = field(default_factory=dict)
    blocks: Dict[str, Tuple[DMSMutableBlocks, int]] = field(default_factory=dict)

    def block_of(self, name: str) -> Optional[Tuple[DMSMutableBlocks, int]]:
        """The depth-searched block that contains module ``name``, if any."""
        parts = name.split('.')
        for end in range(len(parts), 0, -1):
            found = self.blocks.get('.'.join(parts[:end]))
            if found is not None:
                return found
        return None


def build_masked_layout(model: nn.Module, mutator) -> MaskedLayout:
    """Collect the masks a prepared :class:`DMSMutator` put on ``model``."""
    from .vit_space import add_vit_masks
    layout = MaskedLayout()
    for name, module in model.named_modules():
        if hasattr(module, 'get_mutable_attr'):
            masks = LayerMasks(container_mask(module, 'in_channels'),
                               container_mask(module, 'out_channels'))
            if masks.in_mask is not no_mask or masks.out_mask is not no_mask:
                layout.layers[name] = masks
    add_vit_masks(model, mutator, layout)
    for key, names in mutator.stage_blocks.items():
        mutable = mutator.stage_mutables[key]
        for index, name in enumerate(names):
            layout.blocks[name] = (mutable, index)
    return layout
