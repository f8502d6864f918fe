# Copyright (c) mmdms contributors. All rights reserved.
"""``torch.nn.MultiheadAttention`` (DETR's), which runs ``F.multi_head_attention_forward`` on
its own parameters: the estimator counts it as FlopAnalyzer counts it (with ``count_macs``'s
``baddbmm``), for self- and cross-attention, with and without a mask and attention weights.
It was not counted at all (DETR's MACs 28% under FlopAnalyzer's)."""
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st
from mmengine.model import BaseModel

from mmdms.models.search_space import SearchSpace
from mmdms.models.task_modules import DMSResourceEstimator
from mmdms.utils import count_macs


class Attend(BaseModel):
    """Tokens of a conv map attend to themselves and to ``queries`` learned queries."""

    def __init__(self, dims: int, heads: int, queries: int, need_weights: bool, masked: bool,
                 kdim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dims, 2, stride=2)
        self.key_proj = nn.Conv2d(3, kdim, 2, stride=2)
        self.self_attn = nn.MultiheadAttention(dims, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dims, heads, kdim=kdim, vdim=kdim)
        self.queries = nn.Parameter(torch.randn(queries, dims))
        self.need_weights, self.masked = need_weights, masked

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = self.proj(inputs).flatten(2).transpose(1, 2)  # (B, N, C)
        mask = None
        if self.masked:  # a key padding mask (DETR's), which takes the baddbmm path
            mask = torch.zeros(x.shape[:2], dtype=torch.bool)
            mask[:, -1] = True
        x = self.self_attn(x, x, x, key_padding_mask=mask, need_weights=self.need_weights)[0]
        keys = self.key_proj(inputs).flatten(2).permute(2, 0, 1)  # (N, B, kdim)
        q = self.queries[:, None].expand(-1, x.shape[0], -1)
        return x, self.cross_attn(q, keys, keys, need_weights=self.need_weights)[0]


@settings(max_examples=8, deadline=None)
@given(heads=st.sampled_from([1, 2, 4]), side=st.integers(2, 6), queries=st.integers(1, 5),
       need_weights=st.booleans(), masked=st.booleans(), kdim=st.sampled_from([4, 8]))
def test_multihead_attention_counted_as_flop_analyzer(heads, side, queries, need_weights,
                                                      masked, kdim):
    shape = (1, 3, 2 * side, 2 * side)
    model = Attend(8, heads, queries, need_weights, masked, kdim)
    estimator = DMSResourceEstimator(input_shape=shape)
    estimator.prepare(model, SearchSpace())
    assert float(estimator.estimate('macs', full=True)) == count_macs(model, shape)
