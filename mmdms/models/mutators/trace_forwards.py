# Copyright (c) mmdms contributors. All rights reserved.
"""Traceable forwards of module types whose own forward torch.fx cannot trace.

A family adapter provides one (:meth:`~mmdms.models.adapters.FamilyAdapter.trace_forward`); the
channel analyzer installs them on its private copy of the model only (for the FX trace and for
MMRazor's pruned-forward check); the model DMS searches keeps its own forward. Each one computes
exactly what the module's forward computes, with the same submodules in the same order, so the
channel dependencies found are those of the real forward.
"""
import inspect
import types
from typing import Sequence, Tuple

import torch.nn as nn
from mmrazor.models.architectures.dynamic_ops import DynamicChannelMixin

from mmdms.models.adapters.base import adapter_for


def install_trace_forwards(model: nn.Module) -> int:
    """Give every module whose adapter provides a traceable forward that forward (as an
    instance attribute, which ``copy.deepcopy`` keeps, bound to the copy). Returns how many
    modules got one.

    Only for the channel analyzer's private copy of a model: the forward of the model being
    searched is never replaced.
    """
    count = 0
    for module in model.modules():
        adapter = adapter_for(module, 'trace_forward')
        if adapter is None:
            continue
        if module is model and _takes_data_samples(adapter):
            # FX traces the root's class forward, not an instance attribute: the copy's class
            # becomes a subclass with the traceable forward (OpenMMLab's model signature)
            cls = type(model)
            model.__class__ = type(cls.__name__, (cls, ), dict(
                forward=_root_forward(adapter), __module__=cls.__module__,
                __qualname__=cls.__qualname__))
        else:
            module.forward = types.MethodType(adapter.trace_forward, module)
        count += 1
    return count


def _takes_data_samples(adapter) -> bool:
    """Whether ``adapter.trace_forward`` has OpenMMLab's model signature."""
    return 'data_samples' in inspect.signature(adapter.trace_forward).parameters


def _root_forward(adapter):
    """``forward(inputs, data_samples=None, mode='tensor')`` of a model by its adapter."""

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return adapter.trace_forward(self, inputs, data_samples, mode)

    return forward


def output_section_widths(conv: nn.Module, sections: Sequence[int]) -> Tuple[int, ...]:
    """Widths of consecutive output-channel ``sections`` of ``conv``.

    A static conv: ``sections`` as they are (plain ints, so a split by them stays static in the
    FX graph). A conv that MMRazor's pruning check has made a dynamic op: the channels its mask
    keeps in each section, so that the forward of the pruned copy splits where the pruned
    channels now lie.
    """
    if not isinstance(conv, DynamicChannelMixin):
        return tuple(sections)
    mask = conv.get_mutable_attr('out_channels').current_mask
    widths, start = [], 0
    for size in sections:
        widths.append(int(mask[start:start + size].sum().item()))
        start += size
    return tuple(widths)
