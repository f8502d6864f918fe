# Copyright (c) mmdms contributors. All rights reserved.
"""Traceable forwards for module types whose own forward torch.fx cannot trace.

The channel analyzer runs them on its private copy of the model only (for the FX trace and for
MMRazor's pruned-forward check); the model DMS searches keeps its own forward. Each one computes
exactly what the module's forward computes (the tests check this), with the same submodules in
the same order, so the channel dependencies found are those of the real forward.

mmyolo's ``CSPLayerWithTwoConv.forward`` does ``list(x_main.split(...))``; FX cannot iterate a
Proxy with ``list`` (it can unpack one into a fixed number of names, which is what the traceable
forward below does). Add more with :func:`register_trace_forward`.
"""
import importlib
import types
from typing import Callable, Dict, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmrazor.models.architectures.dynamic_ops import DynamicChannelMixin

#: Module class, or ``'package.module.ClassName'`` (imported when needed, skipped when its
#: package is not installed) -> its traceable forward ``fn(module, *args, **kwargs)``. Only
#: instances of exactly that class get it (a subclass may have changed the forward).
TRACE_FORWARDS: Dict[Union[str, type], Callable] = {}


def register_trace_forward(module_type: Union[str, type]) -> Callable[[Callable], Callable]:
    """Decorator: ``fn`` is the traceable forward of ``module_type`` (a class or its path).

    ``fn`` must compute what the module's forward computes, calling the same submodules. If the
    forward splits an output by fixed channel counts, take them from
    :func:`output_section_widths`: MMRazor's check that a width can be pruned runs this forward
    on a physically pruned copy of the model.
    """

    def register(fn: Callable) -> Callable:
        TRACE_FORWARDS[module_type] = fn
        return fn

    return register


def _trace_forward_types() -> Dict[type, Callable]:
    types_: Dict[type, Callable] = {}
    for key, fn in TRACE_FORWARDS.items():
        if isinstance(key, str):
            module_name, _, class_name = key.rpartition('.')
            try:
                key = getattr(importlib.import_module(module_name), class_name)
            except (ImportError, AttributeError):
                continue  # its package is not installed
        types_[key] = fn
    return types_


def install_trace_forwards(model: nn.Module) -> int:
    """Give every module of a registered type its traceable forward (as an instance attribute,
    which ``copy.deepcopy`` keeps, bound to the copy). Returns how many modules got one.

    Only for the channel analyzer's private copy of a model: the forward of the model being
    searched is never replaced.
    """
    forwards = _trace_forward_types()
    count = 0
    for module in model.modules():
        fn = forwards.get(type(module))
        if fn is not None:
            module.forward = types.MethodType(fn, module)
            count += 1
    return count


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


@register_trace_forward('mmyolo.models.layers.yolo_bricks.CSPLayerWithTwoConv')
def csp_layer_with_two_conv_forward(self, x: torch.Tensor) -> torch.Tensor:
    """``CSPLayerWithTwoConv.forward`` with the split unpacked into two names.

    main_conv -> halves ``(a, b)`` of its output -> ``b`` runs through the block chain -> final_conv
    on ``cat([a, b, block_1(b), block_2(block_1(b)), ...])``.
    """
    x_main = self.main_conv(x)
    first, second = x_main.split(
        output_section_widths(self.main_conv.conv, (self.mid_channels, self.mid_channels)), 1)
    outs = [first, second]
    for block in self.blocks:
        outs.append(block(outs[-1]))
    return self.final_conv(torch.cat(outs, 1))
