# Copyright (c) mmdms contributors. All rights reserved.
"""DMSMutator on the real models shipped in mmpretrain (built from its own configs)."""
import copy

import pytest
import torch
from mmpretrain import get_model
from mmrazor.registry import MODELS

from mmdms.models.adapters.vision_transformer import DMSMultiheadAttention
from mmdms.ops.masked_layer_norm import masked_layer_norm_reference
from dms_test_utils import assert_hard_ones_reproduce, last_output

SIZE = 64  # small inputs keep the suite fast; the structure does not depend on them

# name -> (width groups, depth stages, attention mutables)
FAMILIES = {
    'resnet50_8xb32_in1k': (37, 4, 0),
    'efficientnet-b0_3rdparty_8xb32_in1k': (40, 5, 0),
    'mobilenet-v2_8xb32_in1k': (25, 5, 0),
    # 12 layers x (heads, qk dims, v dims, MLP hidden) + the embedding width
    'deit-tiny_4xb256_in1k': (49, 1, 36),
}


def prepare(name):
    model = get_model(name, pretrained=False)
    model.eval()
    reference = copy.deepcopy(model)
    mutator = MODELS.build(dict(_scope_='mmrazor', type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=(1, 3, SIZE, SIZE), tracer_type='FxTracer')))
    mutator.prepare_from_supernet(model)
    return model, reference, mutator


@pytest.fixture(scope='module', params=sorted(FAMILIES))
def prepared(request):
    return (request.param, *prepare(request.param))


def test_search_space_found(prepared):
    name, model, _, mutator = prepared
    widths, depths, attention = FAMILIES[name]
    assert len(mutator.width_mutables) == widths
    assert len(mutator.depth_mutables) == depths
    attention_mutables = [k for k in mutator.structured_mutables
                          if k.rpartition('__')[2] in ('heads', 'qk_dims', 'v_dims')]
    assert len(attention_mutables) == attention
    assert mutator.weight_coverage >= 0.9
    summary = mutator.summary()
    assert f'{widths} width group(s), {depths} depth stage(s)' in summary


def test_backward_reaches_every_structure_parameter(prepared):
    _, model, _, mutator = prepared
    # eval mode: BatchNorm running statistics stay those of the reference model
    out = last_output(model(torch.randn(2, 3, SIZE, SIZE), mode='tensor'))
    out.pow(2).mean().backward()
    for mutable in mutator.dms_mutables():
        grad = mutable.dms_ratio.grad
        assert grad is not None and torch.isfinite(grad) and grad != 0, repr(mutable)
        mutable.dms_ratio.grad = None


def test_hard_masks_at_one_reproduce_the_unmodified_model(prepared):
    _, model, reference, mutator = prepared
    assert_hard_ones_reproduce(model, reference, mutator.dms_mutables(), (2, 3, SIZE, SIZE))


def test_deit_attention_masks_match_a_smaller_attention():
    """Hard-pruning heads and v dims equals an attention whose outputs for them are zero."""
    model, reference, mutator = prepare('deit-tiny_4xb256_in1k')
    attn = model.backbone.layers[0].attn
    assert isinstance(attn, DMSMultiheadAttention)
    heads, qk, v = attn._dms_masks
    heads.importance.copy_(torch.arange(3, 0, -1).float())
    heads.current_choice = 2  # drop head 2
    for m in mutator.dms_mutables():
        m.fix_chosen()
    x = torch.randn(2, 5, 192)
    ref_attn = reference.backbone.layers[0].attn
    with torch.no_grad():
        B, N, _ = x.shape
        qkv = ref_attn.qkv(x).reshape(B, N, 3, 3, 64).permute(2, 0, 3, 1, 4)
        out = torch.nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        out[:, 2] = 0
        expected = ref_attn.proj(out.transpose(1, 2).reshape(B, N, 192))
        assert torch.allclose(attn(x), expected, atol=1e-6)


def test_deit_embedding_mask_is_applied_once_before_qkv_and_fc1():
    """ln1 and ln2 mask their output with the embedding mask; qkv and the FFN's first linear
    read it as it is (one ``m`` at a soft mask, as the paper's ``layer(m x)``, not ``m^2``)."""
    model, _, mutator = prepare('deit-tiny_4xb256_in1k')
    layer = model.backbone.layers[0]
    embed = mutator.space.widths['backbone.embed'].mutable
    embed.importance.copy_(torch.randn(192))
    embed.current_choice = 120  # a soft mask with values strictly between 0 and 1
    mask = embed.soft_mask.detach()
    assert ((mask > 0.01) & (mask < 0.99)).any()
    x = torch.randn(2, 5, 192)
    with torch.no_grad():
        expected_ln1 = masked_layer_norm_reference(x, mask, layer.ln1.weight, layer.ln1.bias,
                                                   layer.ln1.eps)
        torch.testing.assert_close(layer.ln1(x), expected_ln1)
        qkv_mask = layer.attn.qkv.output_soft_mask().detach()
        expected_qkv = torch.nn.functional.linear(
            expected_ln1, layer.attn.qkv.weight * qkv_mask[:, None], layer.attn.qkv.bias * qkv_mask)
        torch.testing.assert_close(layer.attn.qkv(layer.ln1(x)), expected_qkv)
        fc1 = layer.ffn.layers[0][0]
        ln2 = layer.ln2(x)
        torch.testing.assert_close(fc1(ln2), torch.nn.functional.linear(ln2, fc1.weight,
                                                                        fc1.bias))
