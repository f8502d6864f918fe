from .dms import DMS
from .dms_subnet import DMSSubnet

__all__ = ['DMS', 'DMSSubnet']
