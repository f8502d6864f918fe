from .dms import DMS

__all__ = ['DMS']
