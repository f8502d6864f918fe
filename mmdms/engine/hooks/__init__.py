from .dms_importance_hook import DMSImportanceHook

__all__ = ['DMSImportanceHook']
