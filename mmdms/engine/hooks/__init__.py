from .dms_importance_hook import DMSImportanceHook
from .evolution_search_hook import EvolutionSearchHook
from .nan_guard_hook import DMSNaNGuardHook, NonFiniteLossError
from .random_state_hook import RandomStateHook
from .resource_loss_hook import ResourceLossHook, parse_resource

__all__ = ['DMSImportanceHook', 'DMSNaNGuardHook', 'EvolutionSearchHook', 'NonFiniteLossError',
           'RandomStateHook', 'ResourceLossHook', 'parse_resource']
