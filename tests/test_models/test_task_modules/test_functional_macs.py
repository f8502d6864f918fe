# Copyright (c) mmdms contributors. All rights reserved.
"""Operations no layer rule records (:mod:`mmdms.models.task_modules.functional_macs`), in
small real mmpretrain models: a random structure exports exactly, and the estimator's MACs of
the subnet are FlopAnalyzer's (``count_macs``) within 0.1%."""
import pytest
import torch
from mmpretrain.registry import MODELS as PRETRAIN_MODELS

from dms_test_utils import assert_exact_export, mmpretrain_classifier, search_and_export

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


# Attentions whose heads are not searched and that call F.scaled_dot_product_attention (which
# the estimator did not count: Twins' MACs were 20% under FlopAnalyzer's here)
SDPA_MODELS = {'Twins GlobalSubsampledAttention': _twins_gsa,
               'Conformer TransformerEncoderLayer': _conformer}


@pytest.mark.parametrize('name', sorted(SDPA_MODELS))
def test_unsearched_scaled_dot_product_attention_is_counted(name):
    def build():
        torch.manual_seed(0)
        return SDPA_MODELS[name]()

    search, subnet, static = search_and_export(build, SHAPE, seed=1)
    assert_exact_export(search, subnet, static, SHAPE)
