from .dms_mutator import DMSMutator, UntraceableModuleError
from .residual_blocks import KNOWN_RESIDUAL_BLOCKS, ResidualBlockMatcher

__all__ = ['DMSMutator', 'UntraceableModuleError', 'KNOWN_RESIDUAL_BLOCKS',
           'ResidualBlockMatcher']
