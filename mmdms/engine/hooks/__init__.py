from .dms_importance_hook import DMSImportanceHook
from .resource_loss_hook import ResourceLossHook, parse_resource

__all__ = ['DMSImportanceHook', 'ResourceLossHook', 'parse_resource']
