from .complexity import count_macs, count_params, sdpa_flop_jit
from .dist import release_process_group

__all__ = ['count_macs', 'count_params', 'release_process_group', 'sdpa_flop_jit']
