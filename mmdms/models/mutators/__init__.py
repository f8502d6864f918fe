from .channel_analyzer import ChannelTraceError, DMSChannelAnalyzer
from .diagnostics import (ResidualGraphWarning, SearchSpaceBuildError, SearchSpaceConfigError,
                          ThinSearchSpaceError, ThinSearchSpaceWarning,
                          ValueDependentTraceWarning)
from .concrete_tracer import ConcreteFxTracer
from .dms_mutator import DMSMutator, UntraceableModuleError
from .residual_blocks import ResidualBlockMatcher

__all__ = ['DMSMutator', 'UntraceableModuleError', 'ResidualBlockMatcher', 'DMSChannelAnalyzer',
           'ChannelTraceError', 'SearchSpaceBuildError', 'SearchSpaceConfigError',
           'ThinSearchSpaceError', 'ThinSearchSpaceWarning', 'ValueDependentTraceWarning',
           'ConcreteFxTracer', 'ResidualGraphWarning']
