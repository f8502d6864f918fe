from .importance_sync import sync_importance
from .latency_fit import fit_latency_and_broadcast

__all__ = ['fit_latency_and_broadcast', 'sync_importance']
