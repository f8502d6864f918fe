# Copyright (c) mmdms contributors. All rights reserved.
"""The Hugging Face export of pruned Llamas (mmdms.deploy.hf) on tiny random configs, GQA and
MHA: the per-layer directory loads with trust_remote_code, the uniform one as a plain
LlamaForCausalLM with no remote code, both compute the hard-masked search model's logits and
have subnet.json's parameter count; tied embeddings stay tied."""
import json
import os
import os.path as osp
import runpy
import sys

import pytest
import torch

transformers = pytest.importorskip('transformers')

from mmrazor.registry import MODELS  # noqa: E402

from dms_test_utils import randomize_structure  # noqa: E402
from mmdms.apis import build_search_model, export_subnet, load_config  # noqa: E402
from mmdms.deploy import DeployError  # noqa: E402
from mmdms.deploy.hf import save_hf_model  # noqa: E402
from mmdms.models import DMS, DMSSubnet  # noqa: E402
from mmdms.structures import subnet_from_algorithm  # noqa: E402

VOCAB, HIDDEN, HEADS, FFN, LAYERS, TOKENS = 64, 32, 4, 48, 3, 8
HEAD_DIM = HIDDEN // HEADS
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
LLAMA_7B = osp.join(REPO, 'configs', 'dms', 'llama_7b.py')


def llama(kv_heads, **extra):
    return dict(type='HFCausalLM', config=dict(
        model_type='llama', vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN,
        num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=kv_heads,
        **extra))


def pruned(kv_heads, kv_kept, ffn_kept, removed=(1, ), **extra):
    """The search model of a tiny Llama with hard masks: in layer ``i``, ``kv_kept[i]``
    key/value groups and ``ffn_kept[i]`` FFN channels (chosen by random importance); the layers
    ``removed`` dropped. Returns the search model, its subnet and its static model."""
    torch.manual_seed(0)
    arch = llama(kv_heads, **extra)
    search = DMS(arch, mutator=dict(type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=(1, TOKENS), tracer_type='FxTracer')))
    gen = torch.Generator().manual_seed(kv_heads)
    widths = search.space.widths
    for i in range(LAYERS):
        for key, kept in ((f'model.model.layers.{i}.self_attn.heads', kv_kept[i]),
                          (f'model.model.layers.{i}.mlp.hidden', ffn_kept[i])):
            mutable = widths[key].mutable
            mutable.importance.copy_(torch.rand(mutable.num_elements, generator=gen))
            mutable.set_kept(kept)
            mutable.fix_chosen()
    stage, = search.space.stages.values()
    depth = stage.mutable
    depth.importance.copy_(torch.tensor([0. if i in removed else 1. + i for i in range(LAYERS)]))
    depth.set_kept(LAYERS - len(removed))
    depth.fix_chosen()
    subnet = subnet_from_algorithm(search)
    assert subnet['removed_blocks'] == [f'model.model.layers.{i}' for i in removed]
    architecture = MODELS.build(arch)
    architecture.load_state_dict(search.architecture.state_dict())
    return search.eval(), subnet, DMSSubnet(architecture, subnet).eval()


def logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def masked_logits(search, ids):
    with torch.no_grad():
        return search(ids, mode='tensor')


@pytest.mark.parametrize('kv_heads', [2, HEADS])  # grouped-query and multi-head
def test_per_layer_widths_load_with_remote_code(kv_heads, tmp_path):
    kv_kept, ffn_kept = (1, kv_heads, kv_heads - 1), (20, FFN, 33)
    search, subnet, static = pruned(kv_heads, kv_kept, ffn_kept)
    out = str(tmp_path / 'hf')
    result = save_hf_model(static, out, params=subnet['params'])
    assert result['trust_remote_code'] and result['max_rel_diff'] <= 1e-4
    assert {'config.json', 'model.safetensors', 'configuration_mmdms_llama.py',
            'modeling_mmdms_llama.py'} <= set(os.listdir(out))
    with open(osp.join(out, 'config.json')) as f:
        config = json.load(f)
    assert config['auto_map']['AutoModelForCausalLM'] == \
        'modeling_mmdms_llama.MMDMSLlamaForCausalLM'
    group = HEADS // kv_heads
    assert config['num_hidden_layers'] == 2 and config['removed_layers'] == [1]
    assert config['num_key_value_heads_per_layer'] == [kv_kept[0], kv_kept[2]]
    assert config['num_attention_heads_per_layer'] == [kv_kept[0] * group, kv_kept[2] * group]
    assert config['intermediate_size_per_layer'] == [ffn_kept[0], ffn_kept[2]]

    loaded = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert type(loaded).__name__ == 'MMDMSLlamaForCausalLM'
    ids = torch.randint(0, VOCAB, (2, TOKENS))
    assert torch.allclose(logits_of(loaded.eval(), ids), masked_logits(search, ids), atol=1e-4)
    assert loaded.num_parameters() == subnet['params'] < sum(
        p.numel() for p in search.architecture.parameters())
    # the loaded model generates with its cache (per-layer key/value heads)
    generated = loaded.generate(ids[:1, :4], max_new_tokens=3, do_sample=False)
    assert generated.shape == (1, 7)


@pytest.mark.parametrize('kv_heads', [2, HEADS])
def test_uniform_widths_load_as_plain_llama(kv_heads, tmp_path):
    kv_kept, ffn_kept = (kv_heads - 1, ) * LAYERS, (30, ) * LAYERS
    search, subnet, static = pruned(kv_heads, kv_kept, ffn_kept)
    out = str(tmp_path / 'hf')
    result = save_hf_model(static, out, uniform=True, params=subnet['params'])
    assert not result['trust_remote_code'] and result['config'] == 'llama'
    assert not [f for f in os.listdir(out) if f.endswith('.py')]
    with open(osp.join(out, 'config.json')) as f:
        config = json.load(f)
    assert 'auto_map' not in config and config['model_type'] == 'llama'
    assert (config['num_hidden_layers'], config['num_key_value_heads'],
            config['num_attention_heads'], config['intermediate_size'], config['head_dim']) == (
                2, kv_heads - 1, (kv_heads - 1) * HEADS // kv_heads, 30, HEAD_DIM)

    loaded = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False)
    assert type(loaded) is transformers.LlamaForCausalLM
    ids = torch.randint(0, VOCAB, (2, TOKENS))
    assert torch.allclose(logits_of(loaded.eval(), ids), masked_logits(search, ids), atol=1e-4)
    assert loaded.num_parameters() == subnet['params']


def test_search_with_tied_layer_widths_exports_a_plain_llama(tmp_path):
    torch.manual_seed(0)
    search = DMS(llama(2), mutator=dict(
        type='DMSMutator',
        parse_cfg=dict(type='ChannelAnalyzer', demo_input=(1, TOKENS), tracer_type='FxTracer'),
        adapter_args=dict(LlamaForCausalLMAdapter=dict(tie_layer_widths=True))))
    kept = {'model.model.layers.self_attn.heads': 1, 'model.model.layers.mlp.hidden': 29}
    for key, group in search.space.widths.items():
        group.mutable.importance.copy_(torch.rand(group.mutable.num_elements))
        group.mutable.set_kept(kept[key])
        group.mutable.fix_chosen()
    stage, = search.space.stages.values()
    stage.mutable.importance.copy_(torch.tensor([3., 1., 2.]))
    stage.mutable.set_kept(2)
    stage.mutable.fix_chosen()
    subnet = subnet_from_algorithm(search)
    architecture = MODELS.build(llama(2))
    architecture.load_state_dict(search.architecture.state_dict())
    static = DMSSubnet(architecture, subnet).eval()

    out = str(tmp_path / 'hf')
    save_hf_model(static, out, uniform=True, params=subnet['params'])
    loaded = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False)
    assert type(loaded) is transformers.LlamaForCausalLM
    assert (loaded.config.num_hidden_layers, loaded.config.num_key_value_heads,
            loaded.config.intermediate_size) == (2, 1, 29)
    ids = torch.randint(0, VOCAB, (2, TOKENS))
    assert torch.allclose(logits_of(loaded.eval(), ids), masked_logits(search.eval(), ids),
                          atol=1e-4)
    assert loaded.num_parameters() == subnet['params']


def test_uniform_export_refuses_different_widths(tmp_path):
    _, _, static = pruned(2, (1, 2, 2), (30, 30, 30), removed=())
    out = tmp_path / 'hf'
    with pytest.raises(DeployError, match=r'same widths in every decoder layer.*\(2, 1, 30\), '
                       r'\(4, 2, 30\).*trust_remote_code=True'):
        save_hf_model(static, str(out), uniform=True)
    assert not out.exists() and os.listdir(tmp_path) == []


def test_tied_embeddings_stay_tied_and_are_counted_once(tmp_path):
    search, subnet, static = pruned(2, (1, 2, 1), (20, 30, 40), tie_word_embeddings=True)
    model = search.architecture.model
    assert model.lm_head.weight is model.model.embed_tokens.weight
    unique = sum(p.numel() for p in search.architecture.parameters())  # shared ones once
    assert search.supernet_resource('params') == unique
    kept_count = sum(p.numel() for p in static.parameters())
    by_hand = VOCAB * HIDDEN + HIDDEN + sum(  # one embedding matrix, the final norm
        HIDDEN * (2 * kv * (HEADS // 2) * HEAD_DIM + 2 * kv * HEAD_DIM) + 3 * HIDDEN * ffn +
        2 * HIDDEN for kv, ffn in ((1, 20), (1, 40)))
    assert subnet['params'] == kept_count == by_hand

    out = str(tmp_path / 'hf')
    save_hf_model(static, out, params=subnet['params'])
    loaded = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert loaded.config.tie_word_embeddings
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert loaded.num_parameters() == by_hand
    ids = torch.randint(0, VOCAB, (2, TOKENS))
    assert torch.allclose(logits_of(loaded.eval(), ids), masked_logits(search, ids), atol=1e-4)


def test_export_subnet_then_the_tool(tmp_path, monkeypatch):
    """configs/dms/llama_7b.py on a tiny random Llama: export_subnet's output check runs on
    token ids, then tools/deploy/export_hf.py writes a directory that computes the hard-masked
    search model's logits."""
    options = {'model.architecture.pretrained_path': None,
               'model.architecture.config': llama(2)['config'],
               'model.architecture.from_pretrained_kwargs': None,
               'model.mutator.parse_cfg.demo_input': (1, TOKENS)}
    torch.manual_seed(0)
    search = randomize_structure(build_search_model(load_config(LLAMA_7B, options)), seed=3)
    checkpoint = str(tmp_path / 'search.pth')
    torch.save(dict(state_dict=search.state_dict()), checkpoint)
    subnet_dir = str(tmp_path / 'subnet')
    result = export_subnet(LLAMA_7B, checkpoint, subnet_dir, cfg_options=options)
    assert result['input_shape'] == [1, TOKENS] and result['max_rel_output_diff'] <= 1e-4

    monkeypatch.setattr(sys, 'argv', ['export_hf.py', subnet_dir])
    runpy.run_path(osp.join(REPO, 'tools', 'deploy', 'export_hf.py'), run_name='__main__')
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        osp.join(subnet_dir, 'hf'), trust_remote_code=True).eval()
    for mutable in search.dms_mutables():
        mutable.fix_chosen()
    ids = torch.randint(0, VOCAB, (2, TOKENS))
    assert torch.allclose(logits_of(loaded, ids), masked_logits(search.eval(), ids), atol=1e-4)
    assert loaded.num_parameters() == result['params']

    monkeypatch.setattr(sys, 'argv', ['export_hf.py', subnet_dir])  # exists: needs --force
    with pytest.raises(SystemExit, match='export_hf.py: error: .*--force'):
        runpy.run_path(osp.join(REPO, 'tools', 'deploy', 'export_hf.py'), run_name='__main__')
