# Copyright (c) mmdms contributors. All rights reserved.
"""The Llama search space (mmdms.models.adapters.hf_llama) on tiny random Llama decoders."""
import copy

import pytest
import torch

pytest.importorskip('transformers')

from mmrazor.registry import MODELS  # noqa: E402

from mmdms.models import DMS, DMSSubnet  # noqa: E402
from mmdms.structures import subnet_from_algorithm  # noqa: E402

VOCAB, HIDDEN, HEADS, KV_HEADS, FFN, LAYERS, TOKENS = 100, 32, 4, 2, 48, 3, 8
HEAD_DIM = HIDDEN // HEADS


def llama(kv_heads=KV_HEADS, **extra):
    return dict(type='HFCausalLM', config=dict(
        model_type='llama', vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN,
        num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=kv_heads,
        **extra))


def search_model(arch, **mutator):
    torch.manual_seed(0)
    return DMS(arch, mutator=dict(type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=(1, TOKENS), tracer_type='FxTracer'), **mutator))


TIED = dict(adapter_args=dict(LlamaForCausalLMAdapter=dict(tie_layer_widths=True)))


@pytest.fixture(scope='module')
def gqa():
    return search_model(llama())


def attn(i):
    return f'model.model.layers.{i}.self_attn'


def mlp(i):
    return f'model.model.layers.{i}.mlp'


def prune_some(search, seed=0):
    """Keep a random number of KV groups / FFN channels / blocks, chosen by random importance,
    and fix the masks hard."""
    gen = torch.Generator().manual_seed(seed)
    for mutable in search.dms_mutables():
        mutable.importance.copy_(torch.rand(mutable.num_elements, generator=gen))
        low = mutable.min_elements
        kept = int(torch.randint(low, mutable.num_elements, (1, ), generator=gen)) \
            if mutable.num_elements > low else low
        mutable.set_kept(kept)
        mutable.fix_chosen()


def pruned_param_count(subnet):
    """Parameters of the pruned Llama counted by hand from the kept heads, FFN widths and
    blocks (untied embeddings, no biases)."""
    removed = set(subnet['removed_blocks'])
    total = VOCAB * HIDDEN * 2 + HIDDEN  # embed_tokens, lm_head, final norm
    for i in range(LAYERS):
        if f'model.model.layers.{i}' in removed:
            continue
        groups = subnet['widths'][f'{attn(i)}.heads']['kept']
        q = groups * (HEADS // KV_HEADS) * HEAD_DIM
        kv = groups * HEAD_DIM
        ffn = subnet['widths'][f'{mlp(i)}.hidden']['kept']
        total += HIDDEN * (2 * q + 2 * kv) + 3 * HIDDEN * ffn + 2 * HIDDEN
    return total


def test_space(gqa):
    space = gqa.space
    assert sorted(space.widths) == sorted(
        [f'{attn(i)}.heads' for i in range(LAYERS)] + [f'{mlp(i)}.hidden' for i in range(LAYERS)])
    for i in range(LAYERS):
        assert space.widths[f'{attn(i)}.heads'].mutable.num_channels == KV_HEADS
        assert space.widths[f'{mlp(i)}.hidden'].mutable.num_channels == FFN
    assert list(space.stages) == ['model.model.layers.0-2']
    assert space.stages['model.model.layers.0-2'].blocks == [
        f'model.model.layers.{i}' for i in range(LAYERS)]
    assert space.unsearched_layers == ['model.lm_head']


def test_supernet_counts(gqa):
    params = sum(p.numel() for p in gqa.architecture.parameters())
    assert gqa.supernet_resource('params') == params
    per_token = LAYERS * (HIDDEN * (2 * HIDDEN + 2 * KV_HEADS * HEAD_DIM) + 3 * HIDDEN * FFN) \
        + HIDDEN * VOCAB
    attention = LAYERS * 2 * HEADS * HEAD_DIM * TOKENS**2
    # the rotary embedding's ``inv_freq @ positions`` (once per forward): a matrix product no
    # layer makes, counted as FlopAnalyzer counts it
    rotary = HEAD_DIM // 2 * TOKENS
    assert gqa.supernet_resource('macs') == per_token * TOKENS + attention + rotary


def test_full_masks_compute_the_model():
    search = search_model(llama())
    reference = copy.deepcopy(search.architecture.model)  # before the masks: a plain HF model
    ids = torch.randint(0, VOCAB, (2, TOKENS))
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
        for mutable in search.dms_mutables():
            mutable.set_kept(mutable.num_elements)
        assert torch.allclose(search(ids, mode='tensor'), expected, atol=1e-5)


def test_loss_gradient_reaches_every_ratio(gqa):
    gqa.zero_grad()
    for mutable in gqa.dms_mutables():
        mutable.dms_ratio.data.fill_(0.3)  # inside the soft range: the top-k has a gradient
    ids = torch.randint(0, VOCAB, (2, TOKENS))
    loss = gqa(ids, mode='loss')['loss']
    loss.backward()
    for key, group in list(gqa.space.widths.items()) + list(gqa.space.stages.items()):
        grad = group.mutable.dms_ratio.grad
        assert grad is not None and grad.abs().sum() > 0, key


@pytest.mark.parametrize('kv_heads', [KV_HEADS, HEADS])  # grouped-query and multi-head
def test_hard_masks_equal_the_pruned_model(kv_heads):
    search = search_model(llama(kv_heads=kv_heads))
    prune_some(search, seed=kv_heads)
    subnet = subnet_from_algorithm(search)
    assert any(w['kept'] < w['total'] for w in subnet['widths'].values())
    architecture = MODELS.build(llama(kv_heads=kv_heads))  # a fresh supernet
    architecture.load_state_dict(search.architecture.state_dict())  # DMS ops keep the keys
    static = DMSSubnet(architecture, subnet).architecture

    ids = torch.randint(0, VOCAB, (2, TOKENS))
    with torch.no_grad():
        masked = search(ids, mode='tensor')
        assert torch.allclose(static(ids, mode='tensor'), masked, atol=1e-4)
    count = sum(p.numel() for p in static.parameters())
    assert count < sum(p.numel() for p in architecture.parameters()) or subnet['removed_blocks']
    assert subnet['params'] == count
    assert float(search.estimator.estimate('params', hard=True)) == count
    if kv_heads == KV_HEADS:
        assert count == pruned_param_count(subnet)


def test_tied_layer_widths_share_one_mutable_per_kind():
    search = search_model(llama(), **TIED)
    widths = search.space.widths
    assert sorted(widths) == ['model.model.layers.mlp.hidden',
                              'model.model.layers.self_attn.heads']
    heads = widths['model.model.layers.self_attn.heads']
    assert heads.mutable.num_channels == KV_HEADS and len(heads.layers) == 4 * LAYERS
    assert search.supernet_resource('params') == sum(
        p.numel() for p in search.architecture.parameters())

    search.zero_grad()
    for mutable in search.dms_mutables():
        mutable.dms_ratio.data.fill_(0.3)
    search(torch.randint(0, VOCAB, (2, TOKENS)), mode='loss')['loss'].backward()
    for group in widths.values():
        assert group.mutable.dms_ratio.grad.abs().sum() > 0

    prune_some(search, seed=1)
    subnet = subnet_from_algorithm(search)
    architecture = MODELS.build(llama())
    architecture.load_state_dict(search.architecture.state_dict())
    static = DMSSubnet(architecture, subnet).architecture
    ids = torch.randint(0, VOCAB, (2, TOKENS))
    with torch.no_grad():
        assert torch.allclose(static(ids, mode='tensor'), search(ids, mode='tensor'), atol=1e-4)
    kept_layers = [layer for layer in static.model.model.layers if hasattr(layer, 'mlp')]
    assert len({(layer.self_attn.k_proj.out_features, layer.mlp.gate_proj.out_features)
                for layer in kept_layers}) == 1  # the same widths in every kept layer
    per_layer = {f'{attn(i)}.heads': subnet['widths']['model.model.layers.self_attn.heads']
                 for i in range(LAYERS)}
    per_layer.update({f'{mlp(i)}.hidden': subnet['widths']['model.model.layers.mlp.hidden']
                      for i in range(LAYERS)})
    count = sum(p.numel() for p in static.parameters())
    assert subnet['params'] == count == pruned_param_count(dict(subnet, widths=per_layer))


def test_adapter_args_of_an_adapter_that_is_not_there():
    with pytest.raises(ValueError, match=r"adapter_args names \['VisionTransformerAdapter'\], "
                       r"but .* are \['LlamaForCausalLMAdapter'\]"):
        search_model(llama(), adapter_args=dict(VisionTransformerAdapter=dict()))
