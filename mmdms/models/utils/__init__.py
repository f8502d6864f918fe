from .budget_landing import Landing, land_on_target
from .importance_sync import sync_importance
from .latency_fit import fit_latency_and_broadcast

__all__ = ['Landing', 'fit_latency_and_broadcast', 'land_on_target', 'sync_importance']
