from .pruned_attention import PrunedMultiheadAttention
from .pruned_csp_layer import PrunedCSPLayerWithTwoConv
from .removed_block import RemovedBlock

__all__ = ['PrunedCSPLayerWithTwoConv', 'PrunedMultiheadAttention', 'RemovedBlock']
