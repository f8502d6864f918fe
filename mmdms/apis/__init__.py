from .channel_selection import set_kept_channels, set_random_structure, width_producers
from .export import (OUTPUT_TOLERANCE, export_subnet, hard_mask_difference, initialized_subnet,
                     resource_table, static_subnet)
from .mmrazor_pruning import (cycle, dmcp_search, group_fisher_prune, kept_channels_of_units,
                              scale_widths_to)
from .retrain_config import SEARCH_HOOKS, retrain_config, strip_pretrained
from .runs import run_search, run_training
from .search_model import (CheckpointMismatchError, architecture_cfg, build_architecture,
                           build_search_model, load_config, load_search_checkpoint)
from .uniform_scaling import uniform_structure

__all__ = ['CheckpointMismatchError', 'OUTPUT_TOLERANCE', 'SEARCH_HOOKS', 'architecture_cfg',
           'build_architecture', 'build_search_model', 'cycle', 'dmcp_search', 'export_subnet',
           'group_fisher_prune', 'hard_mask_difference', 'initialized_subnet',
           'kept_channels_of_units', 'load_config', 'load_search_checkpoint', 'resource_table',
           'retrain_config', 'run_search', 'run_training', 'scale_widths_to', 'set_kept_channels',
           'set_random_structure', 'static_subnet', 'strip_pretrained', 'uniform_structure',
           'width_producers']
