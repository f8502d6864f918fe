# Copyright (c) mmdms contributors. All rights reserved.
"""configs/dms/llama_7b.py: the paper's Llama-7B search (6.74B -> 5.47B parameters) built on
the meta device from Llama-2-7B's config.json (no weights, no 27 GB), its search space and
parameter count checked against the Hugging Face model's own."""
import json
import os.path as osp

import pytest

pytest.importorskip('transformers')

from mmdms.apis import build_search_model, load_config  # noqa: E402
from mmdms.utils import parse_resource  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'dms', 'llama_7b.py')
# config.json of meta-llama/Llama-2-7b-hf
LLAMA_2_7B = dict(
    architectures=['LlamaForCausalLM'], model_type='llama', vocab_size=32000, hidden_size=4096,
    intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=32, hidden_act='silu', max_position_embeddings=4096,
    rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
    torch_dtype='float16')
LLAMA_2_7B_PARAMS = 6_738_415_616


def test_search_model_counts_llama_7b_on_meta(tmp_path):
    with open(tmp_path / 'config.json', 'w') as f:
        json.dump(LLAMA_2_7B, f)
    cfg = load_config(CONFIG, {'model.architecture.pretrained_path': None,
                               'model.architecture.config': str(tmp_path),
                               'model.architecture.init_device': 'meta'})
    search = build_search_model(cfg)
    hf_model = search.architecture.model
    assert next(hf_model.parameters()).is_meta  # nothing allocated
    assert hf_model.num_parameters() == LLAMA_2_7B_PARAMS
    assert search.supernet_resource('params') == LLAMA_2_7B_PARAMS

    widths = search.space.widths
    assert len(widths) == 2 * 32 and not search.space.stages  # heads and FFN, no depth
    assert widths['model.model.layers.0.self_attn.heads'].mutable.num_channels == 32
    assert widths['model.model.layers.31.mlp.hidden'].mutable.num_channels == 11008
    # per token: every linear's weights once (the embedding is a lookup), plus attention
    tokens = cfg.model.mutator.parse_cfg.demo_input[1]
    linear = LLAMA_2_7B_PARAMS - 32000 * 4096 - (2 * 32 + 1) * 4096
    assert search.supernet_resource('macs') == linear * tokens + 32 * 2 * 4096 * tokens**2

    hook, = [h for h in cfg.custom_hooks if h['type'] == 'ResourceLossHook']
    assert hook['resource'] == 'params'
    assert parse_resource(hook['target'], 'params') == 5.47e9


def test_model_path_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv('LLAMA_PATH', '/models/llama-7b-hf')
    cfg = load_config(CONFIG)
    assert cfg.model.architecture.pretrained_path == '/models/llama-7b-hf'
    assert cfg.train_dataloader.dataset.tokenizer == '/models/llama-7b-hf'

    monkeypatch.delenv('LLAMA_PATH')
    cfg = load_config(CONFIG)
    with pytest.raises(FileNotFoundError, match=r"pretrained_path 'LLAMA_PATH_not_set' is not a "
                       r'local directory.*\$LLAMA_PATH.*--cfg-options'):
        build_search_model(cfg)
