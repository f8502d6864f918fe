from .dms import DMS
from .dms_subnet import DMSSubnet
from .one_shot_dms import OneShotDMS

__all__ = ['DMS', 'DMSSubnet', 'OneShotDMS']
