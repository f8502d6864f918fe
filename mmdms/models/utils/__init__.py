from .importance_sync import sync_importance

__all__ = ['sync_importance']
