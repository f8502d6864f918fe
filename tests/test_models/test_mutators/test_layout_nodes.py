# Copyright (c) mmdms contributors. All rights reserved.
"""Token layouts in the channel graph (:mod:`mmdms.models.mutators.layout_nodes`): a class
token concatenated on the token axis, a position embedding and layer scales read as
parameters join the stream's width instead of tying it to the model's input; a BEiT (EVA's
backbone, 0% searched before) is searched and exports exactly."""
import torch
import torch.nn as nn
from mmengine.model import BaseModel

from dms_test_utils import assert_exact_export, mmpretrain_classifier, search_and_export

SHAPE = (1, 3, 16, 16)


class TokenNet(BaseModel):
    """A patch embedding, a class token (cat on the token axis), a position embedding, one
    residual MLP with a layer scale on the stream, the class token's output classified."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 12, 4, 4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, 12))
        self.pos_embed = nn.Parameter(torch.randn(1, 17, 12))
        self.norm = nn.LayerNorm(12)
        self.fc1, self.fc2 = nn.Linear(12, 24), nn.Linear(24, 12)
        self.gamma = nn.Parameter(torch.rand(12) + 0.5)
        self.head = nn.Linear(12, 5)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = self.patch(inputs).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = x + self.gamma * self.fc2(self.fc1(self.norm(x)).relu())
        return self.head(x[:, 0])


def test_token_stream_class_token_and_layer_scale_are_searched():
    search, subnet, static = search_and_export(TokenNet, SHAPE, seed=2)
    stream = [g for g in search.space.widths.values() if 'patch' in g.layers]
    assert len(stream) == 1 and {'fc1', 'fc2', 'head'} <= set(stream[0].layers)
    assert set(subnet['free_params']) == {'cls_token', 'pos_embed', 'gamma'}
    assert search.space.weight_coverage == 1.0
    assert_exact_export(search, subnet, static, SHAPE)


def tiny_beit():
    torch.manual_seed(0)
    return mmpretrain_classifier(
        dict(type='BEiTViT', arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                       feedforward_channels=64),
             img_size=32, patch_size=8, layer_scale_init_value=0.1, use_abs_pos_emb=True,
             use_rel_pos_bias=False, out_type='avg_featmap', layer_cfgs=dict(bias=True)),
        in_channels=32, neck=None)


def test_beit_stream_is_searched_and_exports_exactly():
    search, subnet, static = search_and_export(tiny_beit, (1, 3, 32, 32), seed=1)
    assert search.space.weight_coverage >= 0.9, search.space.unsearched_layers
    assert {'backbone.cls_token', 'backbone.pos_embed',
            'backbone.layers.0.gamma_1'} <= set(subnet['free_params'])
    assert_exact_export(search, subnet, static, (1, 3, 32, 32))


class CSPNet(BaseModel):
    """A stem and mmyolo's own CSPResLayer as PPYOLOE+'s neck builds it (no shortcut, an SPP
    block, no attention): it concatenates its two branches with ``torch.cat(..., axis=1)``."""

    def __init__(self):
        super().__init__()
        from mmyolo.models.layers.yolo_bricks import CSPResLayer
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.csp = CSPResLayer(16, 24, num_block=1, attention_cfg=None, use_spp=True,
                               block_cfg=dict(type='PPYOLOEBasicBlock', shortcut=False,
                                              use_alpha=False))
        self.head = nn.Linear(24, 5)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return self.head(self.csp(self.stem(inputs)).mean((2, 3)))


def test_cat_spelled_with_numpy_axis_concatenates_channels():
    """``axis=1`` was read as no axis (batch): the branches looked like a concatenation of
    batch items, were tied into one width, and the export differed by 1e-3 (PPYOLOE+)."""
    shape = (1, 3, 16, 16)
    search, subnet, static = search_and_export(CSPNet, shape, seed=3)
    into_conv3 = [set(g.layers) for g in search.space.widths.values()
                  if 'csp.conv3.conv' in g.layers and 'csp.conv3.bn' not in g.layers]
    assert len(into_conv3) == 2  # one width per branch
    assert {'csp.conv1.bn', 'csp.blocks.spp.conv2.bn'} <= into_conv3[0] ^ into_conv3[1]
    assert search.space.weight_coverage == 1.0, search.space.unsearched_layers
    assert_exact_export(search, subnet, static, shape)
