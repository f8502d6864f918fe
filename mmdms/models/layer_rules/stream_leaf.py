# Copyright (c) mmdms contributors. All rights reserved.
"""The op of MMRazor's pruning check for a leaf of the trace whose input and output channels
are one stream (RepMLP's ``RepMLPBlock``, HorNet's ``gnConv``): one mask for both sides."""
from typing import Set

import torch.nn as nn
from mmrazor.models.architectures.dynamic_ops import DynamicChannelMixin


class StreamLeafCheckOp(DynamicChannelMixin):
    """Mixed in before the leaf's class: the same state (its layers are the leaf's), one mask
    ``channels`` registered for ``in_channels`` and ``out_channels`` alike, of the leaf's
    :attr:`channels`. Subclasses give ``channels`` and ``forward`` (the leaf on the kept
    channels, failing where a mask is one it cannot prune); the op is never exported."""

    accepted_mutable_attrs: Set[str] = {'channels'}
    attr_mappings = {'in_channels': 'channels', 'out_channels': 'channels'}

    @classmethod
    def convert_from(cls, module: nn.Module) -> 'StreamLeafCheckOp':
        new = cls.__new__(cls)
        new.__dict__.update(module.__dict__)  # the same layers (and module tables)
        new.mutable_attrs = nn.ModuleDict()
        return new

    def register_mutable_attr(self, attr: str, mutable) -> None:
        attr = self.attr_mappings.get(attr, attr)
        if attr not in self.accepted_mutable_attrs:
            raise NotImplementedError(attr)
        if attr in self.mutable_attrs:  # one mask for the input and the output
            return
        self.check_mutable_channels(mutable)
        if mutable.current_mask.size(0) != self.channels:
            raise ValueError(f'Expect mask size of mutable to be {self.channels} as '
                             f'channels, but got: {mutable.current_mask.size(0)}.')
        self.mutable_attrs[attr] = mutable

    @property
    def static_op_factory(self):
        # the leaf's own class: the nearest module class that is no dynamic op
        return next(c for c in type(self).__mro__
                    if issubclass(c, nn.Module) and not issubclass(c, DynamicChannelMixin))

    def to_static_op(self) -> nn.Module:
        raise NotImplementedError(
            f'the check op of {self.static_op_factory.__name__} is not exported')
