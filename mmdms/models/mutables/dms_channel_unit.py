# Copyright (c) mmdms contributors. All rights reserved.
"""A channel-dependency group found by MMRazor's tracer, searched by one DMSMutableChannel."""
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from mmrazor.models.mutables import MutableChannelUnit
from mmrazor.registry import MODELS
from torch import Tensor

from mmdms.models.layer_rules import (ChannelStep, DMSMaskContainer, replace_with_dms_op,
                                      required_channel_step, rule_for)
from .dms_mutable_channel import DMSMutableChannel


def unit_channel_step(unit) -> ChannelStep:
    """The channel step the layers of a channel unit (MMRazor's, or a :class:`DMSChannelUnit`)
    need (:func:`~mmdms.models.layer_rules.required_channel_step`), e.g. whole groups of the
    GroupNorms it passes through."""
    return required_channel_step((str(c.name), c.module, c.start, c.end)
                                 for c in list(unit.input_related) + list(unit.output_related))


def _produces_weight_norms(module) -> bool:
    """Whether the layer's rule computes each output channel from weights of its own."""
    rule = rule_for(module) if isinstance(module, nn.Module) else None
    return rule is not None and rule.produces_channels


class ProducerWeightNorms:
    """Per channel of a group: ``sum |W|`` over the rows of the layers producing it.

    The producers are the group's layers whose *output* channels the group holds and whose
    layer rule computes per-output-channel weight norms
    (:meth:`~mmdms.models.layer_rules.LayerRule.output_weight_norms`: convs and linears, row
    ``c`` of the weight computes channel ``c``; a depthwise conv counts with its per-channel
    filter). Normalisation layers (a BatchNorm's scale) do not count: they pass each channel
    through rather than produce it; neither do layer types without a rule (e.g. transposed
    convs). The weights are read at every call, from the layers the channel records point at,
    so the norms follow training.

    Args:
        channels (list[Channel]): the group's output-related channel records with a producer.
    """

    def __init__(self, channels: list) -> None:
        self.channels = list(channels)

    def __call__(self) -> Tensor:
        total: Optional[Tensor] = None
        with torch.no_grad():
            for channel in self.channels:
                norms = rule_for(channel.module).output_weight_norms(
                    channel.module, channel.start, channel.end).float()
                total = norms if total is None else total + norms
        return total

    def layer_names(self) -> List[str]:
        return [channel.name for channel in self.channels]


@MODELS.register_module()
class DMSChannelUnit(MutableChannelUnit):
    """All layers whose channels depend on each other share one :class:`DMSMutableChannel`.

    ``prepare_for_pruning`` swaps the group's conv / linear / norm layers for the DMS ops of their
    layer rules (:mod:`mmdms.models.layer_rules`; same parameters and state-dict keys) and
    registers the mutable over the group's channel range of each, so every consumer multiplies
    its input by the group's soft mask. It also gives the mutable a ``weight_norm_source``
    (:class:`ProducerWeightNorms`) for ``importance='l1'``, or none if no conv / linear layer
    produces the group.

    Args:
        num_channels (int): width of the group.
        **mutable_args: arguments of :class:`DMSMutableChannel` (``step``, ``min_width``,
            ``lambda_``, ``importance``, ``normalize``...).
    """

    def __init__(self, num_channels: int, **mutable_args) -> None:
        super().__init__(num_channels)
        self.mutable_args = dict(mutable_args)
        self.mutable_channel = DMSMutableChannel(num_channels, **mutable_args)
        #: Why the step is what it is where the unit's layers set it (the mutator), else ''.
        self.step_reason = ''

    @classmethod
    def init_from_mutable_channel(cls, mutable_channel: DMSMutableChannel) -> 'DMSChannelUnit':
        unit = cls(mutable_channel.num_channels)
        unit.mutable_channel = mutable_channel
        return unit

    def prepare_for_pruning(self, model: nn.Module) -> None:
        self._swap_in_dms_ops(model)
        self._register_channel_container(model, DMSMaskContainer)
        producers = [c for c in self.output_related
                     if c.is_output_channel and _produces_weight_norms(c.module)]
        self.mutable_channel.weight_norm_source = \
            ProducerWeightNorms(producers) if producers else None
        if self.is_mutable:
            self._register_mutable_channel(self.mutable_channel)
        else:
            # Never learnt nor exported: keep its ratio out of the optimiser and of DDP.
            self.mutable_channel.dms_ratio.requires_grad_(False)

    def _swap_in_dms_ops(self, model: nn.Module) -> None:
        """Swap the group's layers for DMS ops that keep their weights (instead of MMRazor's
        ``_replace_with_dynamic_ops``, which re-initialises them; see :func:`replace_with_dms_op`).
        """
        for channel in list(self.input_related) + list(self.output_related):
            if isinstance(channel.module, nn.Module):
                channel.module = replace_with_dms_op(model, channel.name)

    @property
    def current_choice(self) -> int:
        return self.mutable_channel.current_choice

    @current_choice.setter
    def current_choice(self, choice: int) -> None:
        self.mutable_channel.current_choice = choice

    def sample_choice(self) -> int:
        import random
        step = self.mutable_channel.step
        kept = random.randint(self.mutable_channel.min_elements, self.mutable_channel.num_elements)
        return min(kept * step, self.num_channels)

    def config_template(self, with_init_args: bool = False, with_channels: bool = False) -> Dict:
        config = super().config_template(with_init_args, with_channels)
        if with_init_args:
            config['init_args'].update(self.mutable_args)
        return config

    def layer_names(self) -> List[str]:
        """Names of the layers whose input or output channels belong to the group."""
        names = []
        for channel in list(self.output_related) + list(self.input_related):
            if isinstance(channel.module, nn.Module) and channel.name not in names:
                names.append(channel.name)
        return names
