from .dms_ops import (DMS_OP_MAP, DMSBatchNorm1d, DMSBatchNorm2d, DMSBatchNormXd, DMSConv2d,
                      DMSConv2dAdaptivePadding, DMSInputMaskMixin, DMSLayerNorm, DMSLinear,
                      DMSMaskContainer, DMSSyncBatchNorm, dms_op_type,
                      replace_with_dms_op)
from .pruned_attention import PrunedMultiheadAttention
from .pruned_csp_layer import PrunedCSPLayerWithTwoConv
from .removed_block import RemovedBlock

__all__ = ['DMS_OP_MAP', 'DMSBatchNorm1d', 'DMSBatchNorm2d', 'DMSBatchNormXd', 'DMSConv2d',
           'DMSConv2dAdaptivePadding', 'DMSInputMaskMixin', 'DMSLayerNorm', 'DMSLinear',
           'DMSMaskContainer', 'DMSSyncBatchNorm', 'PrunedCSPLayerWithTwoConv',
           'PrunedMultiheadAttention', 'RemovedBlock',
           'dms_op_type', 'replace_with_dms_op']
