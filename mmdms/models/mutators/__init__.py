from .channel_analyzer import DMSChannelAnalyzer
from .dms_mutator import DMSMutator, UntraceableModuleError
from .residual_blocks import KNOWN_RESIDUAL_BLOCKS, ResidualBlockMatcher
from .trace_forwards import TRACE_FORWARDS, register_trace_forward

__all__ = ['DMSMutator', 'UntraceableModuleError', 'KNOWN_RESIDUAL_BLOCKS',
           'ResidualBlockMatcher', 'DMSChannelAnalyzer', 'TRACE_FORWARDS',
           'register_trace_forward']
