# Copyright (c) mmdms contributors. All rights reserved.
"""No silent failures: a thin search space is one warning naming what was left out and why
(an error with ``strict=True``); an exception inside the mutator names the module and the way
out."""
import warnings

import pytest
import torch
import torch.nn as nn
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from mmrazor.registry import MODELS

from mmdms.models import (SearchSpaceBuildError, ThinSearchSpaceError, ThinSearchSpaceWarning)
from dms_test_utils import assert_exact_export, search_and_export
from mmdms.models.adapters import FamilyAdapter
from mmdms.models.mutators.diagnostics import group_names
from mmdms.registry import ADAPTERS


def build_mutator(size=16, **kwargs):
    cfg = dict(_scope_='mmrazor', type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=(1, 3, size, size), tracer_type='FxTracer'))
    cfg.update(kwargs)
    return MODELS.build(cfg)


def prepare_recording(model, **kwargs):
    """Prepare ``model``; the ThinSearchSpaceWarnings it gave."""
    mutator = build_mutator(**kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        mutator.prepare_from_supernet(model)
    return mutator, [w for w in caught if issubclass(w.category, ThinSearchSpaceWarning)]


class PReLUNet(nn.Module):
    """Every width goes through a PReLU with one slope per channel, a layer with parameters
    MMRazor cannot prune: no width can be searched."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1),
                                    nn.Conv2d(8, 8, 3, padding=1)])
        self.acts = nn.ModuleList([nn.PReLU(8) for _ in range(3)])
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        for conv, act in zip(self.convs, self.acts):
            x = act(conv(x))
        return self.head(x.mean(dim=(2, 3)))


class SearchableNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.body(torch.relu(self.stem(x))))
        return self.head(x.mean(dim=(2, 3)))


def test_thin_space_is_one_warning_naming_the_layers_and_why():
    mutator, caught = prepare_recording(PReLUNet())
    assert mutator.weight_coverage < 0.5
    assert len(caught) == 1
    message = str(caught[0].message)
    assert 'convs.1' in message and "'acts.1' (PReLU)" in message
    assert 'did not make prunable' in message and 'leaf_modules' in message


def test_thin_space_is_an_error_with_strict():
    with pytest.raises(ThinSearchSpaceError, match='did not make prunable'):
        build_mutator(strict=True).prepare_from_supernet(PReLUNet())


def test_searchable_model_gives_no_warning_even_with_strict():
    mutator, caught = prepare_recording(SearchableNet(), strict=True)
    assert caught == [] and mutator.weight_coverage > 0.5


def convnext_v2(depths=(2, 2, 2, 2), channels=(8, 16, 32, 64)):
    """ConvNeXt-V2 (GRN, no layer scale) of mmpretrain, at a small size."""
    return MMPRETRAIN_MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='ConvNeXt', arch=dict(depths=list(depths), channels=list(channels)),
                      use_grn=True, layer_scale_init_value=0.),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=channels[-1]))).eval()


def test_convnext_v2_grn_parameters_join_the_search():
    # ConvNeXt-V2's GRN reads its gamma / beta in its forward: MMRazor fed them from the
    # model's input and every width was tied to it (0 widths, a thin-space warning). They are
    # free parameters of the hidden widths now (mmdms.models.mutators.layout_nodes).
    mutator, caught = prepare_recording(convnext_v2(), size=32)
    assert mutator.weight_coverage > 0.75 and caught == []
    assert 'backbone.stages.0.0.grn.gamma' in mutator.space.params


def test_convnext_v2_exports_exactly():
    search, subnet, static = search_and_export(lambda: convnext_v2(depths=(1, 1, 1, 1)),
                                               (1, 3, 32, 32), seed=3)
    assert_exact_export(search, subnet, static, (1, 3, 32, 32))


class BrokenBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


class BrokenNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = BrokenBlock()
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.block(torch.relu(self.stem(x))).mean(dim=(2, 3)))


@ADAPTERS.register_module()
class BrokenBlockAdapter(FamilyAdapter):
    """An adapter with a bug: its space builder indexes past a list."""
    module_type = BrokenBlock

    def build_space(self, model, name, space, mutable_args):
        return [][1]


def test_exception_inside_the_mutator_names_the_module_and_the_way_out():
    with pytest.raises(SearchSpaceBuildError) as info:
        build_mutator().prepare_from_supernet(BrokenNet())
    message = str(info.value)
    assert 'IndexError: list index out of range' in message
    assert "module 'block'" in message and f'{__name__}.BrokenBlock' in message
    assert f"leaf_modules=['{__name__}.BrokenBlock']" in message and 'adapter' in message
    assert isinstance(info.value.__cause__, IndexError)


def test_a_split_that_does_not_add_up_fails_once_naming_its_module(monkeypatch):
    """HorNet's gnconv with a global filter, traced (without the layer rule that makes it a
    leaf, ``mmdms.models.adapters.mmpretrain_hornet``): its channel split does not add up in
    MMRazor's graph, which fed it a new input after each failed check and checked it again (the
    zoo's HorNet-tiny-GF ran past 300 s, this small one past 300 s); now the split fails once
    and the build stops with the module and the way out."""
    from mmpretrain.models.backbones.hornet import gnConv
    from mmdms.models.layer_rules import LAYER_RULES
    monkeypatch.delitem(LAYER_RULES, gnConv)
    model = MMPRETRAIN_MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='HorNet', arch=dict(
            base_dim=16, depths=[1, 1, 1, 1], orders=[2, 3, 4, 5],
            dw_cfg=[dict(type='DW', kernel_size=7)] * 2 + [dict(type='GF', h=4, w=3),
                                                            dict(type='GF', h=2, w=2)])),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=128)))
    with pytest.raises(SearchSpaceBuildError) as info:
        build_mutator(size=64).prepare_from_supernet(model)
    message = str(info.value)
    # (with HorNet's LayerNorms leaves of the trace now, the first split to fail is stage 2's)
    assert "module 'backbone.stages.2.0.gnconv'" in message
    assert "leaf_modules=['mmpretrain.models.backbones.hornet.gnConv']" in message


def test_group_names_bounds_the_list():
    names = [f'backbone.stages.{s}.{b}.conv{i}' for s in range(4) for b in range(3)
             for i in range(2)] + ['head.fc']
    assert group_names(names) == ('backbone.stages.0.* (6), backbone.stages.1.* (6), '
                                  'backbone.stages.2.* (6), backbone.stages.3.* (6), head.fc')
    assert group_names(names, limit=2) == 'backbone.stages.* (24), head.fc'
    assert group_names(names[:3]) == ', '.join(names[:3])
