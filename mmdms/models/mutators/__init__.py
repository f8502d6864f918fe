from .channel_analyzer import DMSChannelAnalyzer
from .dms_mutator import DMSMutator, UntraceableModuleError
from .residual_blocks import ResidualBlockMatcher

__all__ = ['DMSMutator', 'UntraceableModuleError', 'ResidualBlockMatcher', 'DMSChannelAnalyzer']
