# Copyright (c) mmdms contributors. All rights reserved.
"""DMSMutator on mmyolo's YOLOv8 (built from the config shipped in mmyolo)."""
import copy
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmrazor.registry import MODELS

from mmdms.models.adapters.mmyolo_yolov8 import csp_layer_with_two_conv_forward
from dms_test_utils import assert_hard_ones_reproduce

mmyolo = pytest.importorskip('mmyolo')
from mmyolo.models.layers.yolo_bricks import CSPLayerWithTwoConv, DarknetBottleneck  # noqa: E402
from mmyolo.registry import MODELS as YOLO_MODELS  # noqa: E402

SIZE = 64  # small inputs keep the suite fast; the structure does not depend on them
CONFIG = osp.join(osp.dirname(mmyolo.__file__), '.mim', 'configs', 'yolov8',
                  'yolov8_n_syncbn_fast_8xb16-500e_coco.py')

# YOLOv8-n (deepen 0.33, widen 0.25): backbone stages of 1, 2, 2, 1 bottlenecks.
# Widths: stem, 4 downsampling convs, 4 x (main_conv's two halves, one per bottleneck conv1,
# final_conv), SPPF's conv1 and conv2; the neck's 2 downsampling convs and 4 CSP layers (two
# halves, bottleneck conv1 and conv2, final_conv); 3 levels x 2 branches x 2 head convs.
WIDTHS = 1 + 4 + (4 + 5 + 5 + 4) + 2 + 2 + 4 * 5 + 12
# Depths: the backbone's two 2-block stages (the 1-block ones keep their block).
DEPTH_STAGES = {'backbone__stage2__1__blocks__0-1': 2, 'backbone__stage3__1__blocks__0-1': 2}


def build_yolov8() -> nn.Module:
    cfg = Config.fromfile(CONFIG)
    with DefaultScope.overwrite_default_scope('mmyolo'):
        model = YOLO_MODELS.build(cfg.model)
    return model.eval()


def prepare():
    torch.manual_seed(0)
    model = build_yolov8()
    reference = copy.deepcopy(model)
    mutator = MODELS.build(dict(_scope_='mmrazor', type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=(1, 3, SIZE, SIZE), tracer_type='FxTracer')))
    mutator.prepare_from_supernet(model)
    return model, reference, mutator


@pytest.fixture(scope='module')
def prepared():
    return prepare()


class FlatOutputs(nn.Module):
    """All class scores and box predictions of a detector in one tensor."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x):
        cls_scores, bbox_preds = self.detector(x, mode='tensor')[:2]
        return torch.cat([t.flatten(1) for t in list(cls_scores) + list(bbox_preds)], dim=1)


def out_mutables(layer: nn.Module) -> dict:
    """``(start, end) -> mutable`` of the DMS masks registered over a layer's output channels."""
    container = layer.get_mutable_attr('out_channels')
    return {r: m for r, m in container.mutable_channels.items() if hasattr(m, 'soft_mask')}


def in_mutables(layer: nn.Module) -> dict:
    container = layer.get_mutable_attr('in_channels')
    return {r: m for r, m in container.mutable_channels.items() if hasattr(m, 'soft_mask')}


def test_search_space_found(prepared):
    model, _, mutator = prepared
    assert len(mutator.width_mutables) == WIDTHS == 59
    assert {k: len(v) for k, v in mutator.stage_blocks.items()} == DEPTH_STAGES
    assert mutator.weight_coverage >= 0.9
    assert mutator.unsearched_layers == []
    assert f'{WIDTHS} width group(s), 2 depth stage(s)' in mutator.summary()


def test_csp_halves_are_two_groups_followed_into_the_blocks(prepared):
    model, _, mutator = prepared
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, CSPLayerWithTwoConv)]
    assert len(layers) == 8  # 4 in the backbone, 4 in the neck
    for name, layer in layers:
        assert 'forward' not in vars(layer)  # the traceable forward was only the analyzer's
        mid = layer.mid_channels
        halves = out_mutables(layer.main_conv.conv)
        assert sorted(halves) == [(0, mid), (mid, 2 * mid)], name
        first, second = halves[(0, mid)], halves[(mid, 2 * mid)]
        assert first is not second
        final_in = in_mutables(layer.final_conv.conv)
        ranges = [(i * mid, (i + 1) * mid) for i in range(2 + len(layer.blocks))]
        assert sorted(final_in) == ranges, name
        assert final_in[ranges[0]] is first and final_in[ranges[1]] is second
        # the second half feeds the block chain
        assert in_mutables(layer.blocks[0].conv1.conv) == {(0, mid): second}
        for i, block in enumerate(layer.blocks):
            block_out = out_mutables(block.conv2.conv)[(0, mid)]
            assert final_in[ranges[2 + i]] is block_out
            # a shortcut ties every block output to the second half; without one they are free
            assert (block_out is second) == block.add_identity, name
        # the masks the final conv reads are the halves' and the blocks' masks, in order
        expected = torch.cat([final_in[r].soft_mask for r in ranges])
        assert torch.equal(layer.final_conv.conv.get_mutable_attr('in_channels').soft_mask,
                           expected)


def test_prediction_convs_keep_their_output_widths(prepared):
    model, _, mutator = prepared
    head = model.bbox_head.head_module
    searched_outputs = {c.name for u in mutator.mutable_units for c in u.output_related}
    searched = {n for u in mutator.mutable_units for n in u.layer_names()}
    for level in range(3):
        for branch, width in (('cls_preds', 80), ('reg_preds', 64)):
            pred = getattr(head, branch)[level][-1]
            name = f'bbox_head.head_module.{branch}.{level}.2'
            assert pred.out_channels == width
            assert name not in searched_outputs and not out_mutables(pred)
            assert name in searched and in_mutables(pred)  # its input width is searched
            # the branch's first conv reads a searched neck output width, and has its own
            first = getattr(head, branch)[level][0].conv
            assert in_mutables(first) and out_mutables(first)


def test_only_backbone_shortcut_blocks_are_depth_searched(prepared):
    model, _, mutator = prepared
    searched = {b for names in mutator.stage_blocks.values() for b in names}
    bottlenecks = {n: m for n, m in model.named_modules() if isinstance(m, DarknetBottleneck)}
    neck = {n for n in bottlenecks if n.startswith('neck.')}
    assert len(neck) == 4 and not any(bottlenecks[n].add_identity for n in neck)
    assert not searched & neck
    assert not any(bottlenecks[n]._forward_hooks for n in neck)  # no depth mask on them
    assert searched == {n for n, m in bottlenecks.items()
                        if m.add_identity and n.rpartition('.blocks.')[0] in
                        ('backbone.stage2.1', 'backbone.stage3.1')}
    assert set(mutator.fixed_stages) == {'backbone.stage1.1.blocks.0-0',
                                         'backbone.stage4.1.blocks.0-0'}


def test_backward_reaches_every_structure_parameter(prepared):
    model, _, mutator = prepared
    # eval mode: BatchNorm running statistics stay those of the reference model
    out = FlatOutputs(model)(torch.randn(2, 3, SIZE, SIZE))
    out.pow(2).mean().backward()
    for mutable in mutator.dms_mutables():
        grad = mutable.dms_ratio.grad
        assert grad is not None and torch.isfinite(grad) and grad != 0, repr(mutable)
        mutable.dms_ratio.grad = None


def test_hard_masks_at_one_reproduce_the_unmodified_model():
    model, reference, mutator = prepare()
    assert_hard_ones_reproduce(FlatOutputs(model), FlatOutputs(reference),
                               mutator.dms_mutables(), (2, 3, SIZE, SIZE))


def test_traceable_csp_forward_equals_mmyolo_forward():
    torch.manual_seed(0)
    model = build_yolov8()
    layer = model.neck.top_down_layers[0]
    x = torch.randn(2, layer.main_conv.conv.in_channels, 8, 8)
    with torch.no_grad():
        assert torch.equal(csp_layer_with_two_conv_forward(layer, x), layer(x))
    layer = model.backbone.stage2[1]  # two shortcut blocks
    x = torch.randn(2, layer.main_conv.conv.in_channels, 8, 8)
    with torch.no_grad():
        assert torch.equal(csp_layer_with_two_conv_forward(layer, x), layer(x))
