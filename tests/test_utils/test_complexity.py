# Copyright (c) mmdms contributors. All rights reserved.
"""count_macs: FlopAnalyzer's count plus scaled dot-product attention, per sample."""
import torch.nn as nn
import torch.nn.functional as F

from mmdms.utils import count_macs, count_params


class Attention(nn.Module):

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 2 * 2 * 3 + 2 * 5)  # 2 heads, qk dims 3, v dims 5

    def forward(self, x):
        B, N, _ = x.shape
        q, k, v = self.qkv(x).split([6, 6, 10], dim=-1)
        q, k = (t.reshape(B, N, 2, 3).transpose(1, 2) for t in (q, k))
        v = v.reshape(B, N, 2, 5).transpose(1, 2)
        return F.scaled_dot_product_attention(q, k, v)


def test_scaled_dot_product_attention_is_counted_per_sample():
    tokens = 7
    linear = tokens * 8 * 22
    attention = 2 * tokens * tokens * (3 + 5)  # heads * N^2 * (qk + v)
    assert count_macs(Attention(), (4, tokens, 8)) == linear + attention
    assert count_params(Attention()) == 8 * 22 + 22


def test_conv_and_mode_restored():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)).train()
    # conv 3*3*3*4 per pixel, eval BatchNorm 2 per element
    assert count_macs(model, (2, 3, 5, 5)) == 25 * (108 + 2 * 4)
    assert model.training


def test_same_padded_conv_is_counted():
    # FlopAnalyzer alone counts 0 for aten::_convolution_mode (padding='same', as ConvMixer)
    model = nn.Sequential(nn.Conv2d(8, 8, 9, padding='same', groups=8),
                          nn.Conv2d(8, 6, 3, padding='same'))
    assert count_macs(model, (2, 8, 5, 5)) == 25 * (8 * 81 + 6 * 8 * 9)
