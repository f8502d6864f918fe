# Copyright (c) mmdms contributors. All rights reserved.
"""The search space of a DMS model as one record.

:class:`~mmdms.models.DMSMutator` and the family adapters write it once, while they prepare a
supernet; everything downstream reads it and nothing else of the mutator: the resource estimator
(expected widths from soft masks), the export (kept indices from hard masks, ``subnet.json``),
the hooks, the uniform baselines and the structure plot. All keys are module names as
``named_modules`` gives them.

* ``widths``: every searched width (a channel group found by the tracer, or a width an adapter
  built: heads, head dims, MLP hidden, embedding) with its mutable and the layers it masks;
* ``stages``: every depth-searched stage with its mutable and blocks (and those of its blocks
  that return ``(x, *further arguments)`` rather than ``x``); ``fixed_stages``: runs of
  blocks left unsearched, and why;
* ``layers``: per masked layer the mask over its input and output channels;
* ``attentions``: per searched attention the mutables of its heads and qk / v head dims;
* ``params``: parameters owned by no layer (a ViT's class token, position embedding) whose last
  axis (or the axis ``param_axes`` names: Swin-V2's per-head ``logit_scale``, ``(heads, 1, 1)``)
  is a searched width;
* ``blocks``: every depth-searched block with its stage's mutable and its index in the stage.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch.nn as nn
from torch import Tensor

from mmdms.models.layer_rules.base import rule_for

#: ``fn(hard) -> mask`` over one axis of a layer; ``None`` means every channel is kept.
MaskFn = Callable[[bool], Optional[Tensor]]


def no_mask(hard: bool) -> None:
    return None


def mutable_mask(mutable) -> MaskFn:
    """The mask function of one width mutable."""
    return lambda hard: mutable.hard_mask if hard else mutable.soft_mask


def container_mask(layer: nn.Module, attr: str) -> MaskFn:
    """The mask function of a DMS op's ``in_channels`` / ``out_channels`` container."""
    container = layer.get_mutable_attr(attr) if hasattr(layer, 'get_mutable_attr') else None
    if container is None or not hasattr(container, 'mask'):
        return no_mask
    return container.mask


def sole_mutable(container):
    """The one DMS mutable spanning all of a channel ``container``'s channels, else None."""
    mutables = getattr(container, 'mutable_channels', {})
    if len(mutables) != 1:
        return None
    (start, end), mutable = next(iter(mutables.items()))
    if start != 0 or end != container.num_channels or not hasattr(mutable, 'soft_mask'):
        return None
    return mutable


@dataclass
class LayerMasks:
    """The masks on a layer's input channels and output channels."""
    in_mask: MaskFn = no_mask
    out_mask: MaskFn = no_mask

    @property
    def masked(self) -> bool:
        return self.in_mask is not no_mask or self.out_mask is not no_mask


@dataclass
class AttentionMasks:
    """The searched heads and head dims of one attention (its ``softmax(q k^T) v`` cost)."""
    heads: nn.Module
    qk_dims: nn.Module
    v_dims: nn.Module


@dataclass
class WidthGroup:
    """One searched width: its mutable, the layers whose channels it masks, and why its step is
    what it is where its layers set it (e.g. a GroupNorm's whole groups), else ''."""
    mutable: nn.Module
    layers: List[str]
    step_reason: str = ''


@dataclass
class DepthStage:
    """One depth-searched stage: its mutable and its blocks, in order."""
    mutable: nn.Module
    blocks: List[str]
    #: the blocks that return ``(x, *args[1:])``, passing their further arguments through
    #: (MViT-V2's ``(x, out_size)``): a removed one's stand-in returns the same tuple
    tuple_blocks: List[str] = field(default_factory=list)


@dataclass
class SearchSpace:
    """The record of a DMS search space (see the module docstring)."""
    widths: Dict[str, WidthGroup] = field(default_factory=dict)
    stages: Dict[str, DepthStage] = field(default_factory=dict)
    fixed_stages: Dict[str, str] = field(default_factory=dict)
    layers: Dict[str, LayerMasks] = field(default_factory=dict)
    attentions: Dict[str, AttentionMasks] = field(default_factory=dict)
    params: Dict[str, MaskFn] = field(default_factory=dict)
    #: The searched axis of each parameter of ``params`` whose axis is not the last.
    param_axes: Dict[str, int] = field(default_factory=dict)
    blocks: Dict[str, Tuple[nn.Module, int]] = field(default_factory=dict)
    #: Convs whose input mask their BatchNorm applies (the masks of ``layers`` are unchanged).
    folded_convs: List[str] = field(default_factory=list)
    #: Conv / linear layers with no searched width, and the weights searched of all of them.
    unsearched_layers: List[str] = field(default_factory=list)
    covered_weights: int = 0
    total_weights: int = 0

    # writing (the mutator and the adapters) --------------------------------------------------
    def add_width(self, key: str, mutable: nn.Module, layers: List[str],
                  step_reason: str = '') -> None:
        if key in self.widths:
            raise KeyError(f"The search space already has a width '{key}'")
        self.widths[key] = WidthGroup(mutable, list(layers), step_reason)

    def add_stage(self, key: str, mutable: nn.Module, blocks: List[str],
                  tuple_blocks: Sequence[str] = ()) -> None:
        if key in self.stages:
            raise KeyError(f"The search space already has a stage '{key}'")
        self.stages[key] = DepthStage(mutable, list(blocks),
                                      [name for name in blocks if name in set(tuple_blocks)])
        for index, name in enumerate(blocks):
            self.blocks[name] = (mutable, index)

    def set_layer_masks(self, name: str, in_mask: Optional[MaskFn] = None,
                        out_mask: Optional[MaskFn] = None) -> None:
        """Set the mask of layer ``name``'s input and / or output channels."""
        if in_mask is None and out_mask is None:
            return
        masks = self.layers.setdefault(name, LayerMasks())
        if in_mask is not None:
            masks.in_mask = in_mask
        if out_mask is not None:
            masks.out_mask = out_mask

    def add_attention(self, name: str, heads: nn.Module, qk_dims: nn.Module,
                      v_dims: nn.Module) -> None:
        self.attentions[name] = AttentionMasks(heads, qk_dims, v_dims)

    def add_param(self, name: str, mask: MaskFn, axis: int = -1) -> None:
        """A parameter owned by no layer whose last axis (or ``axis``) ``mask`` searches."""
        self.params[name] = mask
        if axis != -1:
            self.param_axes[name] = axis
        else:
            self.param_axes.pop(name, None)

    def param_axis(self, name: str) -> int:
        """The searched axis of free parameter ``name`` (-1: the last)."""
        return self.param_axes.get(name, -1)

    def set_coverage(self, model: nn.Module, searchable: List[Tuple[str, nn.Module]]) -> None:
        """Record which of the ``searchable`` (conv / linear) layers no width covers."""
        covered_names = {n for group in self.widths.values() for n in group.layers}
        modules = dict(model.named_modules())
        for name in list(covered_names):  # layers a covered layer slices with its widths
            rule = rule_for(modules[name]) if name in modules else None
            if rule is not None:
                covered_names.update(f'{name}.{sub}'
                                     for sub in rule.sliced_sublayers(modules[name]))
        self.covered_weights = self.total_weights = 0
        self.unsearched_layers = []
        for name, module in searchable:
            self.total_weights += module.weight.numel()
            if name in covered_names:
                self.covered_weights += module.weight.numel()
            else:
                self.unsearched_layers.append(name)

    # reading -------------------------------------------------------------------------------
    def layer_masks(self, name: Optional[str]) -> LayerMasks:
        """The masks of layer ``name`` (none if it is not masked)."""
        return self.layers.get(name, _UNMASKED) if name is not None else _UNMASKED

    def block_of(self, name: str) -> Optional[Tuple[nn.Module, int]]:
        """The depth-searched block that contains module ``name``, if any."""
        parts = name.split('.')
        for end in range(len(parts), 0, -1):
            found = self.blocks.get('.'.join(parts[:end]))
            if found is not None:
                return found
        return None

    def width_mutables(self) -> list:
        return [group.mutable for group in self.widths.values()]

    def depth_mutables(self) -> list:
        return [stage.mutable for stage in self.stages.values()]

    def dms_mutables(self) -> list:
        """Every mutable: widths first, then stage depths."""
        return self.width_mutables() + self.depth_mutables()

    @property
    def weight_coverage(self) -> float:
        """Fraction of conv/linear weights in layers with a searched input or output width."""
        return self.covered_weights / self.total_weights if self.total_weights else 0.0

    def summary(self) -> str:
        """A readable table of the search space."""
        lines = [f'DMS search space: {len(self.widths)} width group(s), '
                 f'{len(self.stages)} depth stage(s), '
                 f'{self.weight_coverage:.1%} of conv/linear weights searchable, '
                 f'{len(self.folded_convs)} conv input mask(s) applied by their BatchNorm']
        def kept(mutable: nn.Module, count: str):
            # a search model on the meta device (shapes only) has no mask values
            return '?' if mutable.dms_ratio.is_meta else getattr(mutable, count)

        for key, group in self.widths.items():
            m = group.mutable
            why = f' ({group.step_reason})' if group.step_reason else ''
            lines.append(f'  width {key}: N={m.num_channels} step={m.step}{why} '
                         f'width={kept(m, "activated_channels")} '
                         f'layers={",".join(group.layers)}')
        for key, stage in self.stages.items():
            lines.append(f'  depth {key}: blocks={len(stage.blocks)} '
                         f'kept={kept(stage.mutable, "num_kept")} '
                         f'min={stage.mutable.min_elements}')
        for key, why in self.fixed_stages.items():
            lines.append(f'  depth {key}: not searched ({why})')
        return '\n'.join(lines)


_UNMASKED = LayerMasks()
