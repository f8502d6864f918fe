from .dms_importance_hook import DMSImportanceHook
from .random_state_hook import RandomStateHook
from .resource_loss_hook import ResourceLossHook, parse_resource

__all__ = ['DMSImportanceHook', 'RandomStateHook', 'ResourceLossHook', 'parse_resource']
