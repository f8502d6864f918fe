# Copyright (c) mmdms contributors. All rights reserved.
"""Identity-residual blocks found from the executed graph (mmdms.models.mutators.residual_graph):
which modules are blocks, how they form stages, on plain modules (a Hypothesis property) and the
mutator's fallback."""
import warnings

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st
from mmrazor.registry import MODELS

from mmdms.models.architectures import RemovedBlock
from mmdms.models.mutators import ResidualGraphWarning
from mmdms.models.mutators.residual_graph import (graph_candidates, innermost,
                                                  reaches_through_adds, record_blocks)

C = 4


class Block(nn.Module):
    """A block of one kind: ``'residual'`` (``x + g * f(x)``), ``'post_relu'``
    (``relu(f(x) + x)``), ``'projection'`` (``f(x) + conv1x1(x)``), ``'scaled'``
    (``f(x) + a * x``), ``'plain'`` (``f(x)``), ``'two_adds'`` (a transformer block:
    ``h = x + f(x); h + f2(h)``)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.f = nn.Conv2d(C, C, 3, padding=1)
        self.f2 = nn.Conv2d(C, C, 1)
        self.gamma = nn.Parameter(torch.full((C, 1, 1), 0.5))
        self.proj = nn.Conv2d(C, C, 1)

    def forward(self, x: torch.Tensor, extra=None) -> torch.Tensor:
        if self.kind == 'residual':
            return x + self.gamma * self.f(x)
        if self.kind == 'post_relu':
            out = self.f(x)
            out += x
            return torch.relu(out)
        if self.kind == 'projection':
            return self.f(x) + self.proj(x)
        if self.kind == 'scaled':
            return self.f(x) + self.gamma * x
        if self.kind == 'two_adds':
            h = x + self.f(x)
            return h + self.f2(h)
        return self.f(x)


IDENTITY_KINDS = ('residual', 'post_relu', 'two_adds')
KINDS = IDENTITY_KINDS + ('projection', 'scaled', 'plain')


def observe(model, shape=(1, C, 6, 6)):
    names = graph_candidates(model)
    return names, record_blocks(model, names, lambda prepare: model(prepare(torch.randn(shape))))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(KINDS), min_size=1, max_size=6))
def test_identity_blocks_are_exactly_those_with_an_identity_path(kinds):
    model = nn.Sequential(*[Block(k) for k in kinds])
    names, records = observe(model)
    assert names == [str(i) for i in range(len(kinds))]
    found = [n for n in names if records[n].identity_residual]
    assert found == [str(i) for i, k in enumerate(kinds) if k in IDENTITY_KINDS]
    # each block is fed by the one before it
    assert all(records[a].feeds(records[b]) for a, b in zip(names, names[1:]))


def test_a_projection_shortcut_is_not_an_identity_path():
    block = Block('projection')
    x = torch.randn(1, C, 5, 5, requires_grad=True)
    marked = x.clone()
    assert not reaches_through_adds(block(marked), marked.grad_fn)
    block.kind = 'residual'
    assert reaches_through_adds(block(marked), marked.grad_fn)


def test_a_module_returning_its_input_is_not_a_block():
    """No addition on the way: ``g(x) = x`` has no branch to remove."""
    x = torch.randn(3, requires_grad=True)
    marked = x.clone()
    assert not reaches_through_adds(torch.relu(marked.clone()), marked.grad_fn)


def test_a_stage_of_identity_blocks_yields_to_its_blocks():
    """A ``Sequential`` of identity blocks is itself ``x + sum f_i``; the blocks are searched."""
    model = nn.ModuleList([nn.Sequential(Block('residual'), Block('residual'))])
    wrapper = nn.Sequential(*model)
    names, records = observe(wrapper)
    found = [n for n in names if records[n].identity_residual]
    assert found == ['0', '0.0', '0.1']
    assert innermost(found, []) == ['0.0', '0.1']
    assert innermost(found, ['0']) == []  # inside a block a rule names: the rule's block


class Parallel(nn.Module):
    """Two identity blocks in one list, each on its own input (branches, not a stage)."""

    def __init__(self) -> None:
        super().__init__()
        self.branches = nn.ModuleList([Block('residual'), Block('residual')])

    def forward(self, x):
        return self.branches[0](x) + self.branches[1](x * 2)


def build_mutator(**kwargs):
    return MODELS.build(dict(_scope_='mmrazor', type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=(1, C, 6, 6), tracer_type='FxTracer'), **kwargs))


def test_parallel_blocks_are_not_one_stage():
    mutator = build_mutator(min_blocks=0)
    mutator.prepare_from_supernet(Parallel())
    assert sorted(mutator.space.stages) == ['branches.0-0', 'branches.1-1']


def test_stages_of_the_mutator_from_the_graph():
    kinds = ['projection', 'residual', 'post_relu', 'plain', 'two_adds', 'residual', 'residual']
    model = nn.Sequential(*[Block(k) for k in kinds])
    mutator = build_mutator()
    mutator.prepare_from_supernet(model)
    assert mutator.graph_blocks == ['1', '2', '4', '5', '6']
    assert {k: s.blocks for k, s in mutator.space.stages.items()} == {
        '1-2': ['1', '2'], '4-6': ['4', '5', '6']}
    # the depth mask reaches the ratios
    model(torch.randn(2, C, 6, 6)).sum().backward()
    assert all(m.dms_ratio.grad is not None and m.dms_ratio.grad != 0
               for m in mutator.depth_mutables)


def test_blocks_from_graph_can_be_switched_off_and_rules_decide_their_types():
    model = nn.Sequential(*[Block('residual') for _ in range(3)])
    mutator = build_mutator(blocks_from_graph=False)
    mutator.prepare_from_supernet(model)
    assert not mutator.space.stages
    # a rule for the type decides, whatever the graph shows
    path = f'{__name__}.Block'
    model = nn.Sequential(*[Block('residual') for _ in range(3)])
    mutator = build_mutator(block_types={path: 'not_an_attribute'})
    mutator.prepare_from_supernet(model)
    assert not mutator.space.stages and not mutator.graph_blocks


class NoGradBlock(Block):
    """A block whose code refuses a forward with gradients (e.g. it calls ``.numpy()``)."""

    def forward(self, x, extra=None):
        if isinstance(x, torch.Tensor) and x.requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad")
        return super().forward(x)


def test_a_failing_graph_forward_is_said_and_the_rules_still_apply():
    model = nn.Sequential(NoGradBlock('residual'), Block('residual'), Block('residual'))
    mutator = build_mutator(block_types=[f'{__name__}.NoGradBlock'], min_blocks=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        mutator.prepare_from_supernet(model)
    messages = [str(w.message) for w in caught if w.category is ResidualGraphWarning]
    assert len(messages) == 1 and "Can't call numpy()" in messages[0]
    assert 'block_types' in messages[0]
    assert {k: s.blocks for k, s in mutator.space.stages.items()} == {'0-0': ['0']}


class SizedBlock(Block):
    """A block of MViT-V2's signature, ``(x, size) -> (y, size')``: ``'passes'`` returns
    ``(x + f(x), size)`` (the size as a list, equal to the tuple it was given, as MViT-V2's
    pooling gives a ``torch.Size``), ``'resized'`` another size, ``'tensor'`` the tensor
    alone."""

    def forward(self, x, size):
        y = x + self.gamma * self.f(x)
        if self.kind == 'passes':
            return y, [size[0], size[1]]
        if self.kind == 'resized':
            return y, (size[0] + 1, size[1])
        return y


class Sized(nn.Module):
    """Blocks called as MViT-V2 calls its blocks (``'tensor'`` ones as a Swin block)."""

    def __init__(self, kinds) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([SizedBlock(k) for k in kinds])

    def forward(self, x):
        size = (x.shape[-2], x.shape[-1])
        for block in self.blocks:
            out = block(x, size)
            x, size = out if isinstance(out, tuple) else (out, size)
        return x.sum(dim=(2, 3)), size


def test_a_block_passing_its_further_arguments_through_a_tuple_is_a_block():
    """``g(x, size) = (x + f(x), size)`` is a block, searched and removed with its tuple kept;
    a block that returns another size is not one (its stand-in could not give that size)."""
    kinds = ['passes', 'passes', 'resized', 'tensor', 'passes']
    model = Sized(kinds)
    names, records = observe(model)
    assert [n for n in names if records[n].identity_residual] == \
        ['blocks.0', 'blocks.1', 'blocks.3', 'blocks.4']
    assert [n for n in names if records[n].tuple_output] == ['blocks.0', 'blocks.1', 'blocks.4']

    mutator = build_mutator(min_blocks=0)
    mutator.prepare_from_supernet(model)
    assert {k: (s.blocks, s.tuple_blocks) for k, s in mutator.space.stages.items()} == {
        'blocks.0-1': (['blocks.0', 'blocks.1'], ['blocks.0', 'blocks.1']),
        'blocks.3-4': (['blocks.3', 'blocks.4'], ['blocks.4'])}
    x = torch.randn(2, C, 6, 6)
    out, size = model(x)
    out.sum().backward()
    assert tuple(size) == (7, 6)
    assert all(m.dms_ratio.grad is not None and m.dms_ratio.grad != 0
               for m in mutator.depth_mutables)
    # every block removed (hard masks 0): each passes x and the size through
    for mutable in mutator.depth_mutables:
        mutable.set_kept(0)
        mutable.fix_chosen()
    with torch.no_grad():
        expected = model.blocks[2](x, (6, 6))[0].sum(dim=(2, 3))
        assert torch.equal(model(x)[0], expected) and tuple(model(x)[1]) == (7, 6)


def test_a_removed_block_returns_the_tuple_of_the_block_it_stands_for():
    block = SizedBlock('passes')
    x = torch.randn(1, C, 3, 3)
    plain, passing = RemovedBlock.of(block, 'b'), RemovedBlock.of(block, 'b', returns_args=True)
    assert plain(x, (3, 3)) is x
    y, size = passing(x, (3, 3))
    assert y is x and size == (3, 3)
    assert passing.kind == 'passes' and RemovedBlock.returns_args is False
