# Copyright (c) mmdms contributors. All rights reserved.
"""DMSMutator on small hand-written models of the cases MMRazor's tracer tests cover."""
import copy

import pytest
import torch
import torch.nn as nn
from mmrazor.registry import MODELS

from mmdms.models import DMSConv2d, DMSMutator, UntraceableModuleError
from mmdms.models.mutators.channel_analyzer import SplitSpec, shape_only_nodes
from mmdms.models.adapters import FamilyAdapter
from mmdms.models.mutators.trace_forwards import output_section_widths
from mmdms.registry import ADAPTERS
# after mmdms, whose shims let mmrazor.models import on this torch
from mmrazor.models.architectures.dynamic_ops import DynamicChannelMixin  # noqa: E402,I100
from dms_test_utils import assert_hard_ones_reproduce


def build_mutator(**kwargs) -> DMSMutator:
    cfg = dict(_scope_='mmrazor', type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=(1, 3, 16, 16), tracer_type='FxTracer'))
    cfg.update(kwargs)
    return MODELS.build(cfg)


class ConcatModel(nn.Module):
    """Two branches concatenated: the consumer's input is split over two groups."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.c = nn.Conv2d(14, 10, 1)
        self.head = nn.Linear(10, 4)

    def forward(self, x):
        y = self.c(torch.cat([self.a(x), self.b(x)], dim=1))
        return self.head(y.mean(dim=(2, 3)))


class GroupedConvModel(nn.Module):
    """A depthwise and a grouped conv: their in and out channels are tied."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.grouped = nn.Conv2d(12, 12, 3, padding=1, groups=3)
        self.head = nn.Linear(12, 4)

    def forward(self, x):
        y = self.grouped(torch.relu(self.dw(torch.relu(self.stem(x)))))
        return self.head(y.mean(dim=(2, 3)))


class SharedLayerModel(nn.Module):
    """One conv applied twice (weights shared): its input and output widths are one group."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.shared = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.shared(x))
        x = torch.relu(self.shared(x))
        return self.head(x.mean(dim=(2, 3)))


class SplitModel(nn.Module):
    """YOLOv8's CSP pattern: a conv's output split in two parts (tuple unpacking), the second
    through a residual block, then the parts and the block's output concatenated."""

    def __init__(self, how='split'):
        super().__init__()
        self.how = how
        parts = (6, 6) if how in ('chunk', 'split_size') else (5, 7)
        self.parts = parts
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.main = nn.Conv2d(8, sum(parts), 1)
        self.block = nn.Conv2d(parts[1], parts[1], 3, padding=1)
        self.final = nn.Conv2d(parts[0] + 2 * parts[1], 10, 1)
        self.head = nn.Linear(10, 4)

    def split(self, x):
        if self.how == 'chunk':
            return x.chunk(2, 1)
        if self.how == 'split_size':
            return torch.split(x, 6, dim=1)
        return x.split(self.parts, 1)

    def forward(self, x):
        a, b = self.split(self.main(torch.relu(self.stem(x))))
        c = b + self.block(torch.relu(b))
        y = self.final(torch.cat([a, b, c], 1))
        return self.head(y.mean(dim=(2, 3)))

    def zeroed_forward(self, x, keep_a, keep_b):
        """The forward with the channels ``keep_*`` drop zeroed wherever a layer reads them."""
        a, b = self.split(self.main(torch.relu(self.stem(x))))
        c = (b + self.block(torch.relu(b * keep_b))) * keep_b
        y = self.final(torch.cat([a * keep_a, b * keep_b, c], 1))
        return self.head(y.mean(dim=(2, 3)))


@ADAPTERS.register_module()
class SplitModelAdapter(FamilyAdapter):
    """SplitModel's traceable forward (exactly SplitModel: not its subclasses)."""
    module_type = SplitModel
    match_subclasses = False

    def trace_forward(self, module, x):
        return split_model_trace_forward(module, x)


def split_model_trace_forward(self, x):
    """SplitModel's forward for the analyzer; in MMRazor's pruned copy it splits where the kept
    channels of each part lie (the registry's contract)."""
    y = self.main(torch.relu(self.stem(x)))
    if isinstance(self.main, DynamicChannelMixin):
        a, b = y.split(output_section_widths(self.main, self.parts), 1)
    else:
        a, b = self.split(y)
    c = b + self.block(torch.relu(b))
    return self.head(self.final(torch.cat([a, b, c], 1)).mean(dim=(2, 3)))


class StaticSplitModel(SplitModel):
    """SplitModel without a registered trace forward: its split sizes are fixed numbers."""


class ShapeReadModel(nn.Module):
    """A head that reads batch and spatial sizes off its input, as YOLOv8's head does."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.pred = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        b, _, h, w = x.shape
        return self.pred(x).reshape(b, 4, h * w)


class TensorCheckingBlock(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        if not isinstance(x, torch.Tensor):  # a proxy is no tensor: no FX tracer enters it
            raise TypeError(f'expects a tensor, got {type(x).__name__}')
        return self.conv(x)


class UntraceableModel(nn.Module):

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = TensorCheckingBlock()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean(dim=(2, 3)))


def prepare(model, **kwargs):
    reference = copy.deepcopy(model).eval()
    mutator = build_mutator(**kwargs)
    mutator.prepare_from_supernet(model)
    model.eval()
    return mutator, reference


def widths(mutator):
    return sorted(m.num_channels for m in mutator.width_mutables)


def assert_exact_at_hard_ones(model, reference, mutator, shape=(2, 3, 16, 16)):
    assert_hard_ones_reproduce(model, reference, mutator.dms_mutables(), shape)


def test_concat_consumer_gets_both_groups():
    model = ConcatModel()
    mutator, reference = prepare(model)
    assert widths(mutator) == [6, 8, 10]
    container = model.c.get_mutable_attr('in_channels')
    assert isinstance(model.c, DMSConv2d)
    assert sorted(container.mutable_channels) == [(0, 8), (8, 14)]
    # each branch's channels are masked by their own group
    a, b = (mutator._name2unit[n].mutable_channel for n in mutator._name2unit
            if n.startswith(('a.', 'b.')))
    assert torch.equal(container.soft_mask, torch.cat([a.soft_mask, b.soft_mask]))
    assert_exact_at_hard_ones(model, reference, mutator)


def test_depthwise_and_grouped_convs_tie_in_and_out():
    model = GroupedConvModel()
    mutator, reference = prepare(model)
    # stem, dw and grouped share one width; MMRazor keeps grouped-conv groups whole
    names = [u.name for u in mutator.mutable_units]
    assert any(n.startswith('stem') for n in names)
    stem_unit = next(u for u in mutator.mutable_units if u.name.startswith('stem'))
    assert {'dw', 'stem'} <= set(stem_unit.layer_names())
    assert_exact_at_hard_ones(model, reference, mutator)


def test_a_module_used_twice_is_one_group():
    model = SharedLayerModel()
    mutator, reference = prepare(model)
    unit = next(u for u in mutator.mutable_units if 'shared' in u.layer_names())
    assert {'stem', 'shared', 'head'} <= set(unit.layer_names())
    assert_exact_at_hard_ones(model, reference, mutator)


def test_pruning_channels_equals_zeroing_them_in_the_reference():
    """A hard mask removing channels = the unmodified model with those activations zeroed."""
    model = ConcatModel()
    mutator, reference = prepare(model)
    unit = next(u for u in mutator.mutable_units if u.name.startswith('a.'))
    unit.mutable_channel.importance.copy_(torch.arange(8, 0, -1).float())
    unit.mutable_channel.current_choice = 5
    unit.mutable_channel.fix_chosen()
    for m in mutator.dms_mutables():
        if not m.is_fixed:
            m.fix_chosen()
    x = torch.randn(2, 3, 16, 16)
    keep = torch.tensor([1.0] * 5 + [0.0] * 3).view(1, -1, 1, 1)
    with torch.no_grad():
        expected = reference.head(reference.c(torch.cat(
            [reference.a(x) * keep, reference.b(x)], dim=1)).mean(dim=(2, 3)))
        assert torch.allclose(model(x), expected, rtol=1e-5, atol=1e-6)


def test_untraceable_module_is_named_with_the_way_out():
    with pytest.raises(UntraceableModuleError) as info:
        prepare(UntraceableModel())
    message = str(info.value)
    assert "module 'block'" in message and 'TensorCheckingBlock' in message
    assert 'even with its Python control flow run on the demo input' in message
    assert 'leaf_modules=' in message
    # the way out it names works: the block becomes a leaf and its channels stay fixed
    path = f'{TensorCheckingBlock.__module__}.TensorCheckingBlock'
    mutator, _ = prepare(UntraceableModel(), leaf_modules=[path])
    assert 'block.conv' in mutator.unsearched_layers


@pytest.mark.parametrize('name, reason', [
    ('no.such.Block', "No module named 'no'"),
    ('mmpretrain.models.backbones.resnet.NoSuchBlock',
     "module 'mmpretrain.models.backbones.resnet' has no attribute 'NoSuchBlock'"),
    ('Bottleneck', 'a bare class name, not an import path'),
])
def test_unknown_block_type_is_refused(name, reason):
    with pytest.raises(ValueError) as error:
        build_mutator(block_types=[name])
    message = str(error.value)
    assert f"Residual block type '{name}' does not exist ({reason})" in message
    assert 'full import path' in message
    with pytest.raises(ValueError, match="'torch.nn.functional.relu' is not an nn.Module class"):
        build_mutator(block_types={'torch.nn.functional.relu': None})


@pytest.mark.parametrize('how', ['split', 'chunk', 'split_size'])
def test_split_parts_are_groups_of_their_own(how):
    model = SplitModel(how)
    mutator, reference = prepare(model)
    p0, p1 = model.parts
    # stem, the two parts (the second bound to the block's output by the residual), final
    assert widths(mutator) == sorted([8, p0, p1, 10])
    main_out = model.main.get_mutable_attr('out_channels').mutable_channels
    assert sorted(main_out) == [(0, p0), (p0, p0 + p1)]
    first, second = main_out[(0, p0)], main_out[(p0, p0 + p1)]
    assert first is not second
    final_in = model.final.get_mutable_attr('in_channels').mutable_channels
    assert sorted(final_in) == [(0, p0), (p0, p0 + p1), (p0 + p1, p0 + 2 * p1)]
    assert [final_in[r] for r in sorted(final_in)] == [first, second, second]
    assert list(model.block.get_mutable_attr('in_channels').mutable_channels.values()) == [second]
    assert_exact_at_hard_ones(model, reference, mutator)


def test_pruning_a_split_part_equals_zeroing_its_channels():
    model = SplitModel('split')
    mutator, reference = prepare(model)
    main_out = model.main.get_mutable_attr('out_channels').mutable_channels
    first, second = main_out[(0, 5)], main_out[(5, 12)]
    first.importance.copy_(torch.arange(5, 0, -1).float())
    first.current_choice = 3
    second.importance.copy_(torch.tensor([1., 7., 2., 6., 3., 5., 4.]))
    second.current_choice = 4
    for m in mutator.dms_mutables():
        m.fix_chosen()
    keep_a = torch.tensor([1., 1., 1., 0., 0.]).view(1, -1, 1, 1)
    keep_b = torch.tensor([0., 1., 0., 1., 0., 1., 1.]).view(1, -1, 1, 1)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = reference.zeroed_forward(x, keep_a, keep_b)
        assert torch.allclose(model(x), expected, rtol=1e-5, atol=1e-6)


def test_static_split_without_a_trace_forward_keeps_its_parts_fixed():
    """MMRazor's pruned-forward check finds that pruning either part breaks ``split((5, 7))``,
    so both parts stay fixed (their layers are still covered by the other groups)."""
    model = StaticSplitModel('split')
    mutator, reference = prepare(model)
    assert widths(mutator) == [8, 10]
    assert_exact_at_hard_ones(model, reference, mutator)


def test_split_specs_from_fx_nodes():
    def forward(x):
        return (x.split((2, 3), 1), x.chunk(3, dim=1), torch.split(x, 2, 1), x.split(2, dim=2),
                torch.chunk(x, 2, 1))

    nodes = [n for n in torch.fx.symbolic_trace(forward).graph.nodes
             if n.op in ('call_method', 'call_function')]
    specs = [SplitSpec.from_fx_node(n) for n in nodes]
    assert specs[3] is None  # not the channel axis
    assert [s.part_sizes(5) for s in specs[:3]] == [[2, 3], [2, 2, 1], [2, 2, 1]]
    assert specs[2].part_sizes(6) == [2, 2, 2] and specs[1].part_sizes(7) == [3, 3, 1]
    assert specs[4].part_sizes(12) == [6, 6]


def test_batch_and_spatial_size_reads_do_not_fix_a_width():
    model = ShapeReadModel()
    mutator, reference = prepare(model)
    # MMRazor alone ties the stem to the model output through ``x.shape`` (the unused ``_``)
    assert widths(mutator) == [8]
    assert_exact_at_hard_ones(model, reference, mutator)


def test_shape_only_nodes_keep_channel_count_reads():
    def forward(x):
        b, c, h, w = x.shape
        return x.reshape(b, c, h * w) + x.size(0) + x.size(1)

    graph = torch.fx.symbolic_trace(forward).graph
    dropped = {n.name for n in shape_only_nodes(graph)}
    # b, h, w, h * w and size(0) carry no channel count; c, size(1) and the shape they come
    # from stay in the channel graph
    assert dropped == {'getitem', 'getitem_2', 'getitem_3', 'mul', 'size'}


def test_unknown_block_type_in_a_search_config_is_one_clear_error(tmp_path):
    from mmengine.runner import Runner

    from dms_test_utils import digits_search_config
    cfg = digits_search_config(str(tmp_path))
    cfg.model.mutator.block_types = ['mmpretrain.models.backbones.resnet.BasicBlok']
    with pytest.raises(ValueError, match=r"Residual block type 'mmpretrain\.models\.backbones\."
                       r"resnet\.BasicBlok' does not exist .* full import path"):
        Runner.from_cfg(cfg)
