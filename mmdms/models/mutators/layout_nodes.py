# Copyright (c) mmdms contributors. All rights reserved.
"""Channel-graph nodes for token layouts and the parameters a forward reads directly.

MMRazor's channel graph follows one channel count per tensor and knows neither where the
channels lie in a tensor nor what a parameter read by ``self.param`` is. Two things tied the
residual stream of token models (``(B, N, C)``) to the model's input or output, so that it
stayed fixed:

* a parameter read in the forward (an FX ``get_attr``: a class token, a position embedding, a
  layer scale ``gamma``) had no input, so MMRazor fed it from the model's input (3 channels);
  the first add or multiply with the stream then did not match and MMRazor cut the stream off
  there. :class:`FreeParamChannelNode` makes such a parameter a source of its own channels
  (its last axis), so that it joins the width of what it is added to or multiplies;
  :class:`~.channel_analyzer.DMSChannelAnalyzer` slices it in its pruning check and the
  mutator records it as a free parameter of the search space (sliced by the export, counted
  by the estimator);
* ``torch.cat`` of a class token with the patch tokens (on the token axis) became a
  concatenation of channels (``C + C``). :class:`LayoutCatChannelNode` reads the shapes the
  concrete tracer recorded (``node.meta['concrete_shape']``): a ``cat`` along an axis whose
  size is not each input's channel count is a concatenation of positions, whose inputs share
  one set of channels (MMRazor's bind).
"""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
from mmrazor.structures.graph.channel_flow import ChannelTensor
from mmrazor.structures.graph.channel_nodes import (BindChannelNode, CatChannelNode,
                                                    ChannelNode, assert_channel)
from mmrazor.structures.graph.module_graph import ModuleNode
from torch.fx import Node as FxNode

from mmdms.models.layer_rules import rule_for

#: The prefix of a free parameter's name in the channel records (``'param:backbone.cls_token'``).
PARAM_PREFIX = 'param:'


def axis_argument(fx_node: FxNode, position: int, default=None):
    """The axis an FX call passes at ``position`` or by keyword. Torch accepts numpy's
    spelling ``axis`` for ``dim`` (mmyolo's CSP layers call ``torch.cat(..., axis=1)``): read
    as no axis, their channel concatenation looked like one of batch items."""
    if len(fx_node.args) > position:
        return fx_node.args[position]
    return fx_node.kwargs.get('dim', fx_node.kwargs.get('axis', default))


def free_param_of(fx_node: FxNode, model: nn.Module) -> Optional[torch.Tensor]:
    """The parameter (or buffer) an FX ``get_attr`` node reads, if it is one whose last axis
    can be a width: owned by no layer with a layer rule, floating, a ``(C,)`` scale or a
    ``(1, N, C)`` token or embedding, ``C > 1``."""
    if fx_node.op != 'get_attr':
        return None
    try:
        value = model.get_parameter(str(fx_node.target))
    except (AttributeError, TypeError):
        try:  # a fixed table registered as a buffer (T2T's sinusoid position embedding)
            value = model.get_buffer(str(fx_node.target))
        except (AttributeError, TypeError):
            return None
    owner = str(fx_node.target).rpartition('.')[0]
    if rule_for(model.get_submodule(owner)) is not None:
        return None  # a layer's own weight read directly (F.linear(x, self.qkv.weight))
    shape = tuple(value.shape)
    if not value.is_floating_point() or shape[-1] < 2 or \
            not (len(shape) == 1 or (len(shape) == 3 and shape[0] == 1)):
        return None  # e.g. a (positions, heads) relative position table: MMRazor's reading
    return value


class FreeParamChannelNode(ChannelNode):
    """A parameter read directly by a forward: a source of ``channels`` channels of its own
    (its last axis), not fed by the model's input. Its channel records are named
    ``'param:<parameter name>'``."""

    def __init__(self, name: str, val, module_name: str = '', channels: int = 1) -> None:
        super().__init__(name, val, module_name)
        self.channels = channels

    @classmethod
    def copy_from(cls, node: ModuleNode, param_name: str = '',
                  channels: int = 1) -> 'FreeParamChannelNode':
        return cls(node.name, PARAM_PREFIX + param_name, node.module_name, channels)

    @property
    def _in_channels(self) -> int:
        return self.channels

    @property
    def _out_channels(self) -> int:
        return self.channels

    def channel_forward(self, channel_tensors: List[ChannelTensor]) -> ChannelTensor:
        # the input MMRazor gave it (its "auto input") is ignored: a parameter depends on none
        tensor = ChannelTensor(self.channels)
        self.in_channel_tensor = tensor
        self.out_channel_tensor = tensor
        return tensor

    def check_channel(self) -> None:
        pass  # no input channels to match

    def __repr__(self) -> str:
        return super().__repr__() + '_param'


def _shapes(fx_node: FxNode) -> Optional[Sequence]:
    return fx_node.meta.get('concrete_shape')


class LayoutCatChannelNode(ChannelNode):
    """``torch.cat`` with the concrete shapes of its inputs: a concatenation of channels
    (MMRazor's cat) if the axis it concatenates holds each input's channels, else a
    concatenation of positions (a class token and the patch tokens) whose inputs share their
    channels (MMRazor's bind)."""

    def __init__(self, name: str, val, module_name: str = '',
                 shapes: Sequence[tuple] = (), dim: int = 0) -> None:
        super().__init__(name, val, module_name)
        self.shapes, self.dim = list(shapes), dim

    @classmethod
    def copy_from(cls, node: ModuleNode, shapes: Sequence[tuple] = (),
                  dim: int = 0) -> 'LayoutCatChannelNode':
        return cls(node.name, node.val, node.module_name, shapes, dim)

    @property
    def on_positions(self) -> bool:
        """Whether the cat joins positions (tokens), not channels: some input's size along the
        cat axis is not its channel count, and every input has the same channel count."""
        counts = [node.out_channels for node in self.prev_nodes]
        if len(counts) != len(self.shapes) or len(set(counts)) != 1:
            return False
        return any(shape[self.dim] != count for shape, count in zip(self.shapes, counts))

    def channel_forward(self, channel_tensors: List[ChannelTensor]) -> ChannelTensor:
        if self.on_positions:
            return BindChannelNode.channel_forward(self, channel_tensors)
        return CatChannelNode.channel_forward(self, channel_tensors)

    def check_channel(self) -> None:
        if self.on_positions:
            for node in self.prev_nodes:
                assert_channel(node.out_channels == self.in_channels, self)
        else:
            CatChannelNode.check_channel(self)

    def _get_in_channels_by_prev_nodes(self, prev_nodes) -> int:
        if self.on_positions:
            return prev_nodes[0].out_channels
        return CatChannelNode._get_in_channels_by_prev_nodes(self, prev_nodes)

    def __repr__(self) -> str:
        return super().__repr__() + ('_poscat' if self.on_positions else '_cat')

    @staticmethod
    def from_fx_node(node: ModuleNode, fx_node: FxNode) -> Optional['LayoutCatChannelNode']:
        """The node of a ``torch.cat`` FX node whose inputs' concrete shapes are known."""
        if fx_node.op != 'call_function' or fx_node.target is not torch.cat:
            return None
        tensors = fx_node.args[0] if fx_node.args else fx_node.kwargs.get('tensors')
        dim = axis_argument(fx_node, 1, default=0)
        if not isinstance(tensors, (list, tuple)) or not isinstance(dim, int) or \
                not all(isinstance(t, FxNode) for t in tensors):
            return None
        shapes = [_shapes(t) for t in tensors]
        if not shapes or not all(isinstance(s, tuple) and s for s in shapes):
            return None
        if len({len(s) for s in shapes}) != 1:
            return None
        dim = dim % len(shapes[0])
        # the graph's inputs of the node are its distinct input nodes, in order
        if len({t.name for t in tensors}) != len(tensors):
            return None
        return LayoutCatChannelNode.copy_from(node, shapes, dim)
