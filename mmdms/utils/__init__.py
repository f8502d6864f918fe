from .atomic_dir import atomic_directory, atomic_file, check_new_directory
from .complexity import count_macs, count_params, sdpa_flop_jit
from .data_samples import tensor_forward, tensor_mode_data_samples
from .dist import release_process_group
from .resource_units import parse_resource
from .state_dict import load_state_dict_strictly

__all__ = ['atomic_directory', 'atomic_file', 'check_new_directory', 'count_macs',
           'count_params', 'load_state_dict_strictly', 'parse_resource',
           'release_process_group', 'sdpa_flop_jit', 'tensor_forward',
           'tensor_mode_data_samples']
