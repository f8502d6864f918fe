from .depth_mix import depth_mix
from .differentiable_topk import (differentiable_topk, hard_mask, rank_normalize,
                                  rank_normalize_quadratic, soft_mask)
from .masked_layer_norm import masked_layer_norm
from .resource_schedule import decay_progress, resource_target_at

__all__ = ['decay_progress', 'depth_mix', 'differentiable_topk', 'hard_mask', 'masked_layer_norm',
           'rank_normalize', 'rank_normalize_quadratic', 'resource_target_at', 'soft_mask']
