# Copyright (c) mmdms contributors. All rights reserved.
"""LeViT: its streams (linear + BatchNorm1d layers, attentions that split heads with the token
count read from the input) and MLP widths are searched, and a random structure of a small real
LeViT with its distillation head exports exactly (outputs of the hard-masked search model,
FlopAnalyzer's MACs, parameters)."""
import pytest
import torch

from dms_test_utils import assert_exact_export, search_and_export
from mmdms.models.adapters.mmpretrain_levit import (levit_attention_forward,
                                                    levit_attention_subsample_forward)
# after mmdms, whose shims let mmpretrain import on this torch
from mmpretrain.models.backbones import LeViT  # noqa: E402,I100
from mmpretrain.registry import MODELS as PRETRAIN_MODELS  # noqa: E402

SHAPE = (1, 3, 64, 64)
TINY = dict(embed_dims=[16, 24], num_heads=[2, 3], depths=[1, 1], key_dims=[8, 8])


@pytest.fixture
def tiny_levit(monkeypatch):
    # mmpretrain's LeViT refuses custom arch dicts (it checks other keys than it reads)
    monkeypatch.setitem(LeViT.arch_zoo, 'dms-tiny', TINY)

    def build():
        torch.manual_seed(0)
        return PRETRAIN_MODELS.build(dict(
            type='ImageClassifier',
            backbone=dict(type='LeViT', arch='dms-tiny', img_size=64, drop_path_rate=0.1),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LeViTClsHead', num_classes=10, distillation=True,
                      in_channels=24))).eval()

    return build


@pytest.mark.parametrize('training', [False, True])
def test_trace_forwards_are_the_originals(tiny_levit, training):
    stages = tiny_levit().backbone.stages.train(training)
    attention, subsample = stages[0][0].block, stages[1][0]
    x, tokens = torch.randn(2, 16, 16), torch.randn(2, 16, 16)  # 4 x 4 tokens
    with torch.no_grad():
        torch.testing.assert_close(levit_attention_forward(attention, x), attention(x))
        torch.testing.assert_close(levit_attention_subsample_forward(subsample, tokens),
                                   subsample(tokens))


def test_levit_is_searched_and_exports_exactly(tiny_levit):
    search, subnet, static = search_and_export(tiny_levit, SHAPE, seed=1)
    space = search.space
    assert space.weight_coverage >= 0.9, space.unsearched_layers
    assert_exact_export(search, subnet, static, SHAPE)
    # the last stream reaches the head through the pooling and a BatchNorm1d: the pooling
    # counts the kept channels (too few MACs here for the 0.1% check above to see it)
    kept = subnet['layers']['head.head.linear']['kept_in']
    assert kept is not None and len(kept) < TINY['embed_dims'][-1]
    pool = next(call for call in search.estimator.calls if call.kind == 'pool')
    assert float(search.estimator.call_macs(pool, hard=True)) == pool.positions * len(kept)


def test_levit_heads_are_searched_and_export_exactly(tiny_levit):
    """A head fewer in every attention (the down-sampling one too): masked after the BatchNorm
    of its linear, sliced with its attention biases."""
    def one_head_fewer(search):
        for attention in search.space.attentions.values():
            attention.heads.set_kept(attention.heads.num_elements - 1)

    search, subnet, static = search_and_export(tiny_levit, SHAPE, seed=2,
                                               structure=one_head_fewer)
    supernet = tiny_levit()
    names = [n for n, m in supernet.named_modules()
             if type(m).__name__ in ('Attention', 'AttentionSubsample')]
    assert sorted(subnet['attentions']) == sorted(names) and len(names) == 3
    for name in names:
        attn, full = static.architecture.get_submodule(name), supernet.get_submodule(name)
        assert attn.num_heads == full.num_heads - 1 == subnet['attentions'][name]['heads']['kept']
        assert attn.attention_biases.shape[0] == attn.num_heads
        assert attn.proj[1].linear.in_features == attn.dh == attn.d * attn.num_heads
    assert_exact_export(search, subnet, static, SHAPE)
