# Copyright (c) mmdms contributors. All rights reserved.
"""The searched heads and head dims of a window attention, end to end on one ``WindowMSA``:
for any heads / dims / windows / shift, the exported attention computes what the hard-masked
one does, and its MACs (every window's ``q k^T`` and ``attn v``, counted by FlopAnalyzer) and
parameters (the bias table sliced to the kept heads) are what the estimator states. Likewise
Twins' attentions on any feature map: sub-sampled keys and values (``GlobalSubsampledAttention``)
and windows over a padded map (``LocallyGroupedSelfAttention``)."""
import copy
from types import SimpleNamespace

import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdms.models.adapters.mmpretrain_stream_attention import (
    GlobalSubsampledAttention, LocallyGroupedSelfAttention, PrunedGlobalSubsampledAttention,
    PrunedLocallyGroupedSelfAttention, PrunedWindowMSA, WindowMSA)
from mmdms.models.adapters.searched_attention import add_traced_attention
from mmdms.models.search_space import SearchSpace
from mmdms.models.task_modules import DMSResourceEstimator
from mmdms.structures import prune_to_subnet, subnet_from_algorithm
from mmdms.utils import count_macs, count_params


class Windows(nn.Module):
    """A window attention on ``(1, windows * N, C)``: its ``windows`` batch items, with a
    shifted-window mask (0 / -100 per window, as Swin builds it) or none."""

    def __init__(self, attn: WindowMSA, windows: int, mask) -> None:
        super().__init__()
        self.attn, self.windows = attn, windows
        self.register_buffer('mask', mask)

    def forward(self, x: torch.Tensor, mode: str = 'tensor') -> torch.Tensor:
        out = self.attn(x.reshape(self.windows, -1, x.shape[-1]), self.mask)
        return out.reshape(1, -1, out.shape[-1])


@settings(max_examples=20, deadline=None)
@given(num_heads=st.integers(1, 4), head_dims=st.integers(1, 5), window=st.integers(1, 3),
       windows=st.integers(1, 4), shifted=st.booleans(), seed=st.integers(0, 2**16))
def test_window_attention_exports_exactly_and_costs_per_window(num_heads, head_dims, window,
                                                               windows, shifted, seed):
    g = torch.Generator().manual_seed(seed)
    embed, tokens = num_heads * head_dims, window * window
    attn = WindowMSA(embed, (window, window), num_heads).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    mask = None
    if shifted:
        mask = (torch.rand(windows, tokens, tokens, generator=g) < 0.3).float() * -100.
    model = Windows(attn, windows, mask).eval()
    static = copy.deepcopy(model)

    space = SearchSpace()
    assert add_traced_attention(model, 'attn', space, {}, 4.0,
                                PrunedWindowMSA.per_head_params) is not None
    for mutable in space.dms_mutables():
        mutable.importance.copy_(torch.rand(mutable.importance.shape, generator=g))
        mutable.set_kept(int(torch.randint(1, mutable.num_elements + 1, (1, ), generator=g)))
        mutable.fix_chosen()
    shape = (1, windows * tokens, embed)
    estimator = DMSResourceEstimator(input_shape=shape)
    estimator.prepare(model, space, forward=lambda m, x: m(x))
    subnet = subnet_from_algorithm(SimpleNamespace(architecture=model, space=space,
                                                   estimator=estimator))
    prune_to_subnet(static, subnet)

    kept = subnet['attentions']['attn']
    heads = kept['heads']['kept']
    assert isinstance(static.attn, PrunedWindowMSA)
    assert static.attn.relative_position_bias_table.shape[-1] == heads
    x = torch.randn(shape, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(static(x), model(x), rtol=1e-4, atol=1e-5)
    assert count_macs(static, shape) == subnet['macs']
    assert count_params(static) == subnet['params']
    # the attention's own share: heads * (qk + v) * N^2 per window, not (windows * N)^2
    linears = tokens * (embed * heads * (2 * kept['qk_dims']['kept'] + kept['v_dims']['kept']) +
                        heads * kept['v_dims']['kept'] * embed) * windows
    assert subnet['macs'] - linears == \
        windows * heads * (kept['qk_dims']['kept'] + kept['v_dims']['kept']) * tokens**2


class FeatureMap(nn.Module):
    """A Twins attention on ``(1, H * W, C)`` tokens of an ``H x W`` map."""

    def __init__(self, attn: nn.Module, hw_shape) -> None:
        super().__init__()
        self.attn, self.hw_shape = attn, tuple(hw_shape)

    def forward(self, x: torch.Tensor, mode: str = 'tensor') -> torch.Tensor:
        return self.attn(x, self.hw_shape)


@settings(max_examples=20, deadline=None)
@given(subsampled=st.booleans(), num_heads=st.integers(1, 3), head_dims=st.integers(1, 4),
       height=st.integers(1, 7), width=st.integers(1, 7), size=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_twins_attention_exports_exactly_and_costs_its_keys(subsampled, num_heads, head_dims,
                                                           height, width, size, seed):
    g = torch.Generator().manual_seed(seed)
    embed = num_heads * head_dims
    if subsampled:  # ``size``: the sub-sampling ratio, at most the map's sides
        size = min(size, height, width)
        attn = GlobalSubsampledAttention(embed, num_heads, sr_ratio=size)
    else:  # ``size``: the window side; the map is padded to whole windows
        attn = LocallyGroupedSelfAttention(embed, num_heads, window_size=size)
    attn.eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    model = FeatureMap(attn, (height, width)).eval()
    static = copy.deepcopy(model)

    space = SearchSpace()
    assert add_traced_attention(model, 'attn', space, {}, 4.0) is not None
    for mutable in space.dms_mutables():
        mutable.importance.copy_(torch.rand(mutable.importance.shape, generator=g))
        mutable.set_kept(int(torch.randint(1, mutable.num_elements + 1, (1, ), generator=g)))
        mutable.fix_chosen()
    shape = (1, height * width, embed)
    estimator = DMSResourceEstimator(input_shape=shape)
    estimator.prepare(model, space, forward=lambda m, x: m(x))
    subnet = subnet_from_algorithm(SimpleNamespace(architecture=model, space=space,
                                                   estimator=estimator))
    prune_to_subnet(static, subnet)

    assert isinstance(static.attn, PrunedGlobalSubsampledAttention if subsampled else
                      PrunedLocallyGroupedSelfAttention)
    x = torch.randn(shape, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(static(x), model(x), rtol=1e-4, atol=1e-5)
    assert count_macs(static, shape) == subnet['macs']
    assert count_params(static) == subnet['params']
