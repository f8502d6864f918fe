# Copyright (c) mmdms contributors. All rights reserved.
"""One table of layer rules, one entry per layer type (see :mod:`.base`)."""
from .base import (LAYER_RULES, ChannelStep, LayerCall, LayerRule, MaskReader, SubnetError,
                   channelwise_indices, layer_channels, leaf_layer_types, register_layer_rule,
                   replace_with_dms_op, required_channel_step, rule_for, searchable_layers,
                   select_param)
from .batch_norm import (BatchNorm1dRule, BatchNormRule, DMSBatchNorm1d, DMSBatchNorm2d,
                         DMSBatchNormXd, DMSSyncBatchNorm)
from .conv import ConvRule, DMSConv2d, DMSConv2dAdaptivePadding
from .conv_transpose import ConvTransposeRule
from .layer_norm import (DMSGroupNorm, DMSLayerNorm, DMSLayerNorm2d, GroupNormRule,
                         LayerNorm2dRule, LayerNormRule)
from .linear import DMSLinear, LinearRule
from .masked_forward import DMSInputMaskMixin, DMSMaskContainer, mask_input_channels
from .multihead_attention import PrunedTorchMultiheadAttention, TorchMultiheadAttentionRule
from .pooling import AdaptiveAvgPoolRule

__all__ = [
    'LAYER_RULES', 'ChannelStep', 'LayerCall', 'LayerRule', 'MaskReader', 'SubnetError',
    'channelwise_indices', 'layer_channels', 'leaf_layer_types', 'register_layer_rule',
    'replace_with_dms_op', 'required_channel_step', 'rule_for', 'searchable_layers',
    'select_param', 'BatchNorm1dRule',
    'BatchNormRule',
    'DMSBatchNorm1d', 'DMSBatchNorm2d', 'DMSBatchNormXd', 'DMSSyncBatchNorm', 'ConvRule',
    'DMSConv2d', 'DMSConv2dAdaptivePadding', 'ConvTransposeRule', 'DMSGroupNorm',
    'DMSLayerNorm', 'DMSLayerNorm2d', 'GroupNormRule', 'LayerNorm2dRule', 'LayerNormRule',
    'DMSLinear', 'LinearRule', 'DMSInputMaskMixin', 'DMSMaskContainer', 'mask_input_channels',
    'PrunedTorchMultiheadAttention', 'TorchMultiheadAttentionRule', 'AdaptiveAvgPoolRule'
]
