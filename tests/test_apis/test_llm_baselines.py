# Copyright (c) mmdms contributors. All rights reserved.
"""The LLM pruning baselines of the language-model benchmark on a tiny random Llama:
LLM-Pruner's first-order Taylor scores and ShortGPT's Block Influence."""
import pytest
import torch

pytest.importorskip('transformers')

from mmdms.apis import (block_influence, drop_layers_by_influence,  # noqa: E402
                        llama_taylor_importance, taylor_structure)
from mmdms.models import DMS  # noqa: E402
from mmdms.models.language_models import HFCausalLM  # noqa: E402
from mmdms.structures import subnet_from_algorithm  # noqa: E402

VOCAB, HIDDEN, HEADS, KV_HEADS, FFN, LAYERS, TOKENS = 100, 32, 4, 2, 48, 4, 8
HEAD_DIM = HIDDEN // HEADS
CONFIG = dict(model_type='llama', vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN,
              num_hidden_layers=LAYERS, num_attention_heads=HEADS,
              num_key_value_heads=KV_HEADS)


def search_model(**mutator):
    torch.manual_seed(0)
    return DMS(dict(type='HFCausalLM', config=CONFIG), mutator=dict(
        type='DMSMutator', parse_cfg=dict(type='ChannelAnalyzer', demo_input=(1, TOKENS),
                                          tracer_type='FxTracer'), **mutator))


def batches(n=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (2, TOKENS), generator=gen) for _ in range(n)]


def test_taylor_scores_sum_w_times_grad_over_each_group():
    torch.manual_seed(0)
    model = HFCausalLM(config=CONFIG)
    scores = llama_taylor_importance(model, batches())
    assert all(p.grad is None for p in model.parameters())  # cleared afterwards
    for ids in batches():  # the gradient summed over the batches, by hand
        model.model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    layer = model.model.model.layers[1]
    attn, mlp = layer.self_attn, layer.mlp

    def s(param, index):
        return (param * param.grad)[index].abs().sum()

    group = HEADS // KV_HEADS
    q = slice(1 * group * HEAD_DIM, 2 * group * HEAD_DIM)  # the query heads of KV group 1
    kv = slice(HEAD_DIM, 2 * HEAD_DIM)
    expected = (s(attn.q_proj.weight, (q, )) + s(attn.o_proj.weight, (slice(None), q)) +
                s(attn.k_proj.weight, (kv, )) + s(attn.v_proj.weight, (kv, )))
    heads = scores['model.model.layers.1.self_attn.heads']
    assert heads.shape == (KV_HEADS, )
    torch.testing.assert_close(heads[1], expected)
    expected = (s(mlp.gate_proj.weight, (5, )) + s(mlp.up_proj.weight, (5, )) +
                s(mlp.down_proj.weight, (slice(None), 5)))
    ffn = scores['model.model.layers.1.mlp.hidden']
    assert ffn.shape == (FFN, )
    torch.testing.assert_close(ffn[5], expected)


def test_taylor_structure_keeps_the_top_scored_same_fraction_per_layer():
    search = search_model()
    scores = llama_taylor_importance(search.architecture, batches())
    supernet = search.estimator.estimate('params', hard=True).item()
    cost = taylor_structure(search, scores, 0.7 * supernet)
    assert abs(cost - 0.7 * supernet) <= 0.02 * 0.7 * supernet
    subnet = subnet_from_algorithm(search)
    assert subnet['params'] == cost
    kept = {subnet['widths'][f'model.model.layers.{i}.mlp.hidden']['kept']
            for i in range(LAYERS)}
    assert len(kept) == 1  # block-wise: the same width in every layer
    for i in range(LAYERS):
        mutable = search.space.widths[f'model.model.layers.{i}.mlp.hidden'].mutable
        top = scores[f'model.model.layers.{i}.mlp.hidden'].topk(next(iter(kept))).indices
        assert sorted(mutable.kept_channel_indices()) == sorted(top.tolist())
    with pytest.raises(KeyError, match='no Taylor score'):
        taylor_structure(search, {}, 0.7 * supernet)


def test_block_influence_is_one_minus_cosine_of_hidden_states():
    torch.manual_seed(0)
    model = HFCausalLM(config=CONFIG)
    influence = block_influence(model, batches())
    assert influence.shape == (LAYERS, )
    sums = torch.zeros(LAYERS - 1, dtype=torch.float64)
    for ids in batches():  # independently: the hidden states transformers returns
        hidden = model.model(input_ids=ids, output_hidden_states=True).hidden_states
        for i in range(LAYERS - 1):  # the last one is after the final norm
            sums[i] += torch.nn.functional.cosine_similarity(
                hidden[i].double(), hidden[i + 1].double(), dim=-1).sum()
    expected = (1 - sums / sum(ids.numel() for ids in batches())).float()
    torch.testing.assert_close(influence[:-1], expected)


def test_drop_layers_by_influence_removes_the_lowest():
    search = search_model(search_depth=True)
    supernet = search.estimator.estimate('params', hard=True).item()
    per_layer = (HIDDEN * (2 * HEADS * HEAD_DIM + 2 * KV_HEADS * HEAD_DIM) + 3 * HIDDEN * FFN +
                 2 * HIDDEN)
    cost = drop_layers_by_influence(search, torch.tensor([0.3, 0.1, 0.4, 0.2]),
                                    supernet - 2 * per_layer + 10)
    assert cost == supernet - 2 * per_layer
    subnet = subnet_from_algorithm(search)
    assert sorted(subnet['removed_blocks']) == ['model.model.layers.1', 'model.model.layers.3']
    assert subnet['params'] == cost
    with pytest.raises(ValueError, match='search_depth=True'):
        drop_layers_by_influence(search_model(search_depth=False), torch.zeros(LAYERS), cost)
