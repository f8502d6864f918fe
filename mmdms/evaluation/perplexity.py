# Copyright (c) mmdms contributors. All rights reserved.
"""Perplexity of a causal language model over a dataset."""
import math
from typing import Dict, List, Optional, Sequence

from mmengine.evaluator import BaseMetric
from mmpretrain.registry import METRICS


@METRICS.register_module()
class Perplexity(BaseMetric):
    """``exp(sum of next-token NLL / number of predicted tokens)`` over the whole dataset.

    Reads the ``'predict'`` outputs of :class:`~mmdms.models.language_models.HFCausalLM`:
    per sample a dict with ``nll`` (the summed next-token negative log-likelihood, nats) and
    ``num_tokens``. Token-weighted, so batches and ranks of different sizes give the same value
    as one pass over all tokens.

    Reports ``{prefix}/perplexity`` and ``{prefix}/nll`` (mean NLL per token).

    Args:
        collect_device (str): device of the cross-rank gather.
        prefix (str, optional): key prefix; default ``'lm'``.
    """

    default_prefix = 'lm'

    def __init__(self, collect_device: str = 'cpu', prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)

    def process(self, data_batch, data_samples: Sequence[Dict]) -> None:
        for sample in data_samples:
            if not isinstance(sample, dict) or 'nll' not in sample or \
                    'num_tokens' not in sample:
                raise ValueError('Perplexity reads the per-sample dicts with nll and '
                                 "num_tokens of HFCausalLM's 'predict' mode; got "
                                 f'{type(sample).__name__}: {sample!r:.200}')
            self.results.append((float(sample['nll']), int(sample['num_tokens'])))

    def compute_metrics(self, results: List[tuple]) -> Dict[str, float]:
        tokens = sum(n for _, n in results)
        if not tokens:
            raise ValueError('Perplexity: no token was predicted (empty dataset, or blocks of '
                             'fewer than 2 tokens)')
        nll = sum(v for v, _ in results) / tokens
        return dict(perplexity=math.exp(nll), nll=nll)
