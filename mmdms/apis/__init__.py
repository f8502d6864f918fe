from .block_influence import block_influence, drop_layers_by_influence
from .channel_selection import set_kept_channels, set_random_structure, width_producers
from .export import (OUTPUT_TOLERANCE, export_subnet, hard_mask_difference, initialized_subnet,
                     resource_table, static_subnet)
from .mmrazor_pruning import (cycle, dmcp_search, group_fisher_prune, kept_channels_of_units,
                              scale_widths_to)
from .pretrained_supernet import cached_pretraining, setting_key
from .retrain_config import SEARCH_HOOKS, retrain_config, strip_pretrained
from .runs import final_checkpoint, run_search, run_training
from .search_model import (CheckpointMismatchError, architecture_cfg, build_architecture,
                           build_search_model, load_config, load_search_checkpoint)
from .taylor_pruning import llama_taylor_importance, taylor_structure
from .uniform_scaling import uniform_structure

__all__ = ['CheckpointMismatchError', 'OUTPUT_TOLERANCE', 'SEARCH_HOOKS', 'architecture_cfg',
           'block_influence', 'build_architecture', 'build_search_model', 'cached_pretraining',
           'cycle', 'dmcp_search', 'drop_layers_by_influence', 'export_subnet',
           'final_checkpoint', 'group_fisher_prune', 'hard_mask_difference',
           'initialized_subnet', 'kept_channels_of_units', 'llama_taylor_importance',
           'load_config', 'load_search_checkpoint', 'resource_table', 'retrain_config',
           'run_search', 'run_training', 'scale_widths_to', 'set_kept_channels',
           'set_random_structure', 'setting_key', 'static_subnet', 'strip_pretrained',
           'taylor_structure', 'uniform_structure', 'width_producers']
