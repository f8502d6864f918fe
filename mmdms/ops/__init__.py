from .depth_mix import depth_mix
from .differentiable_topk import (differentiable_topk, hard_mask, rank_normalize,
                                  rank_normalize_quadratic, soft_mask)

__all__ = ['depth_mix', 'differentiable_topk', 'hard_mask', 'rank_normalize',
           'rank_normalize_quadratic', 'soft_mask']
