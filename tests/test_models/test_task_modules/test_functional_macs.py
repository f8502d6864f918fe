# Copyright (c) mmdms contributors. All rights reserved.
"""Operations no layer rule records (:mod:`mmdms.models.task_modules.functional_macs`), in
small real mmpretrain models: a random structure exports exactly, and the estimator's MACs of
the subnet are FlopAnalyzer's (``count_macs``) within 0.1%."""
import pytest
import torch
from mmengine.model import BaseModel
from mmpretrain.registry import MODELS as PRETRAIN_MODELS

from dms_test_utils import assert_exact_export, mmpretrain_classifier, search_and_export
from mmdms.models.search_space import SearchSpace
from mmdms.models.task_modules import DMSResourceEstimator
from mmdms.utils import count_macs

SHAPE = (1, 3, 32, 32)


def _twins_gsa():
    # depth 2: the second block of a stage is the global sub-sampled attention
    return mmpretrain_classifier(
        dict(type='SVT', arch=dict(embed_dims=[16, 32], depths=[2, 2], num_heads=[1, 2],
                                   patch_sizes=[4, 2], strides=[4, 2], mlp_ratios=[2, 2],
                                   sr_ratios=[2, 1], window_sizes=[2, 2]), out_indices=(1, )),
        in_channels=32)


def _conformer():
    return PRETRAIN_MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='Conformer', arch=dict(embed_dims=32, channel_ratio=1, num_heads=2,
                                                  depths=3),
                      patch_size=16, base_channels=8, out_indices=(3, )),
        head=dict(type='ConformerHead', num_classes=10, in_channels=[32, 32]))).eval()


def _mobilevit():
    # the transformer of its MobileViT block runs on unfolded patches
    return mmpretrain_classifier(
        dict(type='MobileViT', arch=[['mobilenetv2', 8, 1, 1, 2],
                                     ['mobilevit', 16, 2, 16, 32, 2, 2]],
             stem_channels=8, last_exp_factor=2, out_indices=(1, )),
        in_channels=32)


# Attentions whose heads are not searched and that call F.scaled_dot_product_attention (which
# the estimator did not count: Twins' MACs were 20% under FlopAnalyzer's here, MobileViT's 7%)
SDPA_MODELS = {'Twins GlobalSubsampledAttention': _twins_gsa,
               'Conformer TransformerEncoderLayer': _conformer,
               'MobileViT transformer': _mobilevit}


@pytest.mark.parametrize('name', sorted(SDPA_MODELS))
def test_unsearched_scaled_dot_product_attention_is_counted(name):
    def build():
        torch.manual_seed(0)
        return SDPA_MODELS[name]()

    search, subnet, static = search_and_export(build, SHAPE, seed=1)
    assert_exact_export(search, subnet, static, SHAPE)


def _mvit():
    # pooling attention with decomposed relative positions (two torch.einsum per block)
    return mmpretrain_classifier(
        dict(type='MViT', arch=dict(embed_dims=16, num_layers=3, num_heads=1,
                                    downscale_indices=[1]), img_size=32),
        in_channels=32)


def test_mvit_relative_position_einsums_are_counted():
    def build():
        torch.manual_seed(0)
        return _mvit()

    search, subnet, static = search_and_export(build, SHAPE, seed=1)
    assert_exact_export(search, subnet, static, SHAPE)


class Einsum(BaseModel):
    """A conv map's features contracted with fixed tensors by one ``torch.einsum``."""

    def __init__(self, equation: str, others: tuple, as_list: bool = False):
        super().__init__()
        self.proj = torch.nn.Conv2d(3, 4, 2, stride=2)
        self.equation, self.as_list = equation, as_list
        for i, shape in enumerate(others):
            self.register_buffer(f'other{i}', torch.randn(shape))
        self.others = len(others)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = self.proj(inputs)  # (1, 4, 3, 3)
        operands = [x] + [getattr(self, f'other{i}') for i in range(self.others)]
        if self.as_list:
            return torch.einsum(self.equation, operands)
        return torch.einsum(self.equation, *operands)


@pytest.mark.parametrize('equation,others,as_list', [
    ('bchw,ck->bkhw', [(4, 5)], False),  # a summed index
    ('bchw,ck->bkhw', [(4, 5)], True),  # the operands passed as one list
    ('bchw,wk', [(3, 2)], False),  # implicit output
    ('bchw,bchw->bchw', [(1, 4, 3, 3)], False),  # no summed index: numpy's count, halved
    ('bchw,ck,kj->bjhw', [(4, 5), (5, 2)], False),  # three operands: einsum_path's optimum
])
def test_einsum_counted_as_flop_analyzer(equation, others, as_list):
    shape = (1, 3, 6, 6)
    model = Einsum(equation, others, as_list).eval()
    estimator = DMSResourceEstimator(input_shape=shape)
    estimator.prepare(model, SearchSpace())
    assert float(estimator.estimate('macs', full=True)) == count_macs(model, shape)


class WindowAttentionV2(BaseModel):
    """Tokens of a conv map in one window of Swin-V2's ``WindowMSAV2``, which computes its
    ``qkv`` as ``F.linear(input=x, weight=..., bias=...)``: every argument by keyword."""

    def __init__(self):
        super().__init__()
        from mmpretrain.models.utils.attention import WindowMSAV2
        self.proj = torch.nn.Conv2d(3, 8, 2, stride=2)
        self.attn = WindowMSAV2(8, (4, 4), 2, cpb_mlp_hidden_dims=16)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return self.attn(self.proj(inputs).flatten(2).transpose(1, 2))


def test_functional_linear_with_keyword_arguments_is_counted():
    shape = (1, 3, 8, 8)
    model = WindowAttentionV2().eval()
    estimator = DMSResourceEstimator(input_shape=shape)
    estimator.prepare(model, SearchSpace())  # raised an IndexError, reading args[0]
    assert float(estimator.estimate('macs', full=True)) == count_macs(model, shape)
