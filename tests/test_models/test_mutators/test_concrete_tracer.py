# Copyright (c) mmdms contributors. All rights reserved.
"""Modules MMRazor's symbolic FX tracer cannot enter (Python control flow on traced values: Swin's
``assert L == H * W``, Twins' ``if pad_r > 0``, TinyViT's ``len(x.shape)``) are traced on the
demo input by :class:`ConcreteFxTracer`; their widths are searched and export exactly."""
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import Linear
from mmengine.model import BaseModel

from mmdms.apis import hard_mask_difference, set_random_structure
from mmdms.models import DMS, DMSSubnet, ValueDependentTraceWarning
from mmdms.models.mutators.concrete_tracer import ConcreteFxTracer
from mmdms.structures import subnet_from_algorithm
from mmdms.utils import count_macs, count_params


class PaddedBlock(nn.Module):
    """Pads odd sizes and crops back: control flow on ``x.shape``."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.bn = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        h, w = x.shape[2:]
        assert h == w, f'square inputs only, got {h} x {w}'
        if h % 2 or w % 2:
            x = F.pad(x, (0, w % 2, 0, h % 2))
        y = self.conv2(F.relu(self.bn(self.conv1(x))))
        return (x + y)[:, :, :h, :w]


class PaddedNet(BaseModel):

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = PaddedBlock(8, 12)
        self.head = nn.Linear(8, 5)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return self.head(self.block(self.stem(inputs)).mean(dim=(2, 3)))


class TokenBlock(nn.Module):
    """A pre-norm transformer block written as Swin's: it asserts the token count."""

    def __init__(self, dim: int, hidden: int, heads: int, windows: int = 1) -> None:
        super().__init__()
        self.heads, self.head_dims, self.windows = heads, dim // heads, windows
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        # mmcv's Linear, as mmcv's FFN (Swin's, Twins') builds it
        self.fc1, self.act, self.fc2 = Linear(dim, hidden), nn.GELU(), Linear(hidden, dim)

    def forward(self, x, hw_shape):
        B, L, C = x.shape
        assert L == hw_shape[0] * hw_shape[1], 'input feature has wrong size'
        B, L = B * self.windows, L // self.windows  # attention within windows, as Swin's
        qkv = self.qkv(self.norm1(x).reshape(B, L, C)).reshape(B, L, 3, self.heads,
                                                               self.head_dims)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = (q * self.head_dims**-0.5 @ k.transpose(-2, -1)).softmax(dim=-1)
        y = self.proj((attn @ v).transpose(1, 2).reshape(B, L, self.heads * self.head_dims))
        x = x + y.reshape(x.shape)
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class TokenNet(BaseModel):
    """Patch embedding, two token blocks, a LayerNorm, mean pooling and a classifier."""

    def __init__(self, dim: int = 16, hidden: int = 24, heads: int = 2,
                 windows: int = 1) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, 4)
        self.blocks = nn.ModuleList([TokenBlock(dim, hidden, heads, windows) for _ in range(2)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 5)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = self.embed(inputs)
        hw_shape = x.shape[2:]
        x = x.flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = block(x, hw_shape)
        return self.head(self.norm(x).mean(dim=1))


class ValueBranchBlock(nn.Module):

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        if x.abs().sum() > 0:  # decided on the values: taken by the demo input
            return self.conv(x)
        return x


class ValueBranchNet(BaseModel):

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = ValueBranchBlock()
        self.head = nn.Linear(8, 2)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return self.head(self.block(self.stem(inputs)).mean(dim=(2, 3)))


def search_model(model: BaseModel, shape: tuple) -> DMS:
    return DMS(model, mutator=dict(type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=shape, tracer_type='FxTracer')))


def assert_exports_exactly(search: DMS, model_type: type, shape: tuple) -> None:
    set_random_structure(search.eval(), torch.Generator().manual_seed(3))
    subnet = subnet_from_algorithm(search)
    architecture = model_type()
    architecture.load_state_dict(search.architecture.state_dict())
    static = DMSSubnet(architecture, subnet)
    assert hard_mask_difference(search, static, (2, ) + shape[1:]) <= 1e-5
    assert count_macs(static, shape) == subnet['macs']
    assert count_params(static) == subnet['params']


def test_shape_control_flow_is_traced_on_the_demo_input():
    shape = (1, 3, 15, 15)  # odd: the padding branch runs
    with warnings.catch_warnings():
        warnings.simplefilter('error', ValueDependentTraceWarning)  # shapes are no values
        search = search_model(PaddedNet(), shape)
    assert search.mutator.concretely_traced == ['block']
    assert sorted(m.num_channels for m in search.space.width_mutables()) == [8, 12]
    assert search.space.weight_coverage == 1.0
    assert_exports_exactly(search, PaddedNet, shape)


class WindowedTokenNet(TokenNet):
    """TokenNet with its attention run on 2 windows of 8 tokens: (2 B, 8, C)."""

    def __init__(self) -> None:
        super().__init__(windows=2)


@pytest.mark.parametrize('model_type, tokens', [(TokenNet, 16), (WindowedTokenNet, 8)])
def test_token_model_searches_stream_and_mlp_widths_and_counts_attention_products(
        model_type, tokens):
    shape = (1, 3, 16, 16)
    search = search_model(model_type(), shape)
    assert search.mutator.concretely_traced == ['blocks.0', 'blocks.1']
    widths = {frozenset(group.layers): group.mutable.num_channels
              for group in search.space.widths.values()}
    stream = next(layers for layers, n in widths.items() if 'embed' in layers)
    assert {'embed', 'blocks.0.norm1', 'blocks.1.qkv', 'blocks.1.proj', 'blocks.1.fc2', 'norm',
            'head'} <= stream
    assert sorted(widths.values()) == [16, 24, 24]  # the stream and each MLP's hidden width
    assert search.space.weight_coverage == 1.0
    # q @ k^T and attn @ v of each block: 2 heads x tokens^2 x 8 dims per window, twice
    windows = 16 // tokens
    assert [macs for _, macs in search.estimator.products] == \
        [windows * 2 * tokens * tokens * 8] * 4
    # a layer run on (windows, tokens, C) counts every window of the sample
    qkv = next(call for call in search.estimator.calls if call.name == 'blocks.0.qkv')
    assert qkv.positions == 16
    assert_exports_exactly(search, model_type, shape)


def test_value_dependent_control_flow_is_one_warning_naming_the_module_and_the_line():
    shape = (1, 3, 8, 8)
    with pytest.warns(ValueDependentTraceWarning) as record:
        search = search_model(ValueBranchNet(), shape)
    assert len(record) == 1
    message = str(record[0].message)
    assert "'block': a tensor's truth value at " in message
    assert f'{__file__}:{ValueBranchBlock.forward.__code__.co_firstlineno + 1}' in message
    assert 'leaf_modules' in message
    # the value that decided the branch leaves no node behind to tie the width to an output
    assert search.space.weight_coverage == 1.0
    assert_exports_exactly(search, ValueBranchNet, shape)


def test_concrete_tracer_folds_shapes_and_takes_the_branch_of_the_input():

    class Crop(nn.Module):

        def forward(self, x):
            if x.shape[-1] > 4:
                return x[..., :4] * 2
            return x - 1

    tracer = ConcreteFxTracer({'x': torch.ones(1, 2, 6)})
    graph = tracer.trace(Crop())
    ops = [(n.op, getattr(n.target, '__name__', n.target)) for n in graph.nodes]
    assert ops == [('placeholder', 'x'), ('call_function', 'getitem'),
                   ('call_function', 'mul'), ('output', 'output')]
    assert tracer.value_reads == {}
