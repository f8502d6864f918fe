from .differentiable_topk import (differentiable_topk, hard_mask, rank_normalize,
                                  rank_normalize_quadratic, soft_mask)

__all__ = ['differentiable_topk', 'hard_mask', 'rank_normalize', 'rank_normalize_quadratic',
           'soft_mask']
