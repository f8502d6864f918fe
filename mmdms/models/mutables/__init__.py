from .dms_channel_unit import DMSChannelUnit, unit_channel_step
from .dms_mutable_blocks import DMSMutableBlocks
from .dms_mutable_channel import DMSMutableChannel
from .dms_topk import DMSTopkMixin
from .expanded_mutable_channel import ExpandedMutableChannel
from .importance import (BaseImportance, IndexImportance, L1Importance, TaylorImportance,
                         build_importance, check_weight_norm_sources)

__all__ = ['DMSChannelUnit', 'DMSMutableBlocks', 'DMSMutableChannel', 'DMSTopkMixin',
           'ExpandedMutableChannel', 'BaseImportance',
           'IndexImportance', 'L1Importance', 'TaylorImportance', 'build_importance',
           'check_weight_norm_sources', 'unit_channel_step']
