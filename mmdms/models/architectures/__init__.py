from .dms_ops import (DMS_OP_MAP, DMSBatchNorm1d, DMSBatchNorm2d, DMSBatchNormXd, DMSConv2d,
                      DMSConv2dAdaptivePadding, DMSInputMaskMixin, DMSLayerNorm, DMSLinear,
                      DMSMaskContainer, DMSSyncBatchNorm, dms_op_type,
                      replace_with_dms_op)
from .pruned_attention import PrunedMultiheadAttention
from .removed_block import RemovedBlock

__all__ = ['DMS_OP_MAP', 'DMSBatchNorm1d', 'DMSBatchNorm2d', 'DMSBatchNormXd', 'DMSConv2d',
           'DMSConv2dAdaptivePadding', 'DMSInputMaskMixin', 'DMSLayerNorm', 'DMSLinear',
           'DMSMaskContainer', 'DMSSyncBatchNorm', 'PrunedMultiheadAttention', 'RemovedBlock',
           'dms_op_type', 'replace_with_dms_op']
