from .ema_structure_sync import sync_structure_into_ema
from .hooks import *  # noqa: F401,F403
from .optimizers import *  # noqa: F401,F403
