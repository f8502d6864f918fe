# Copyright (c) mmdms contributors. All rights reserved.
"""HFCausalLM: a transformers causal LM as an mmengine model."""
import math

import pytest
import torch

pytest.importorskip('transformers')

import mmdms  # noqa: E402,F401  (compat shims, then the registrations: alone, mmrazor fails)
from mmrazor.registry import MODELS  # noqa: E402

CONFIG = dict(model_type='llama', vocab_size=50, hidden_size=16, intermediate_size=24,
              num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)


@pytest.fixture(scope='module')
def lm():
    torch.manual_seed(0)
    return MODELS.build(dict(type='HFCausalLM', config=CONFIG)).eval()


def test_modes_match_transformers(lm):
    ids = torch.randint(0, 50, (3, 6))
    with torch.no_grad():
        reference = lm.model(input_ids=ids, labels=ids)
        assert torch.equal(lm(ids, mode='tensor'), reference.logits)
        loss = lm(ids, mode='loss')['loss']
        assert torch.allclose(loss, reference.loss, atol=1e-6)
        samples = lm(ids, mode='predict')
    assert [s['num_tokens'] for s in samples] == [5, 5, 5]
    mean_nll = sum(s['nll'] for s in samples) / sum(s['num_tokens'] for s in samples)
    assert math.isclose(mean_nll, float(reference.loss), rel_tol=1e-5)


def test_padding_is_not_predicted():
    torch.manual_seed(0)
    lm = MODELS.build(dict(type='HFCausalLM', config=dict(CONFIG, pad_token_id=0))).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0]])
    with torch.no_grad():
        sample, = lm(ids, mode='predict')
    assert sample['num_tokens'] == 2


def test_bad_input(lm):
    with pytest.raises(ValueError, match='exactly one of config'):
        MODELS.build(dict(type='HFCausalLM'))
    with pytest.raises(ValueError, match="needs 'model_type'"):
        MODELS.build(dict(type='HFCausalLM', config=dict(hidden_size=16)))
    with pytest.raises(ValueError, match=r'shape \(batch, tokens\)'):
        lm(torch.zeros(2, 3, 4, dtype=torch.long), mode='loss')
    with pytest.raises(ValueError, match="Invalid mode 'logits'"):
        lm(torch.zeros(1, 4, dtype=torch.long), mode='logits')


def test_config_from_a_local_directory_and_on_the_meta_device(tmp_path):
    import transformers
    transformers.AutoConfig.for_model(**CONFIG).save_pretrained(str(tmp_path))
    from_dir = MODELS.build(dict(type='HFCausalLM', config=str(tmp_path)))
    assert from_dir.hf_config.intermediate_size == 24 and from_dir.hf_config.vocab_size == 50

    meta = MODELS.build(dict(type='HFCausalLM', config=CONFIG, init_device='meta'))
    assert all(p.is_meta for p in meta.parameters())
    ids = meta.random_inputs((2, 7))  # token ids where the model is
    assert ids.is_meta and ids.dtype == torch.long
    assert meta(ids, mode='tensor').shape == (2, 7, 50)  # rotary embedding: shapes only


def test_random_inputs_cover_the_vocabulary(lm):
    ids = lm.random_inputs((4, 100), torch.Generator().manual_seed(0))
    assert ids.dtype == torch.long and 0 <= int(ids.min()) and int(ids.max()) < 50
    assert len(ids.unique()) > 40


def test_bad_paths_are_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrained_path '.*nothing' is not a local"):
        MODELS.build(dict(type='HFCausalLM', pretrained_path=str(tmp_path / 'nothing')))
    with pytest.raises(FileNotFoundError, match='neither a config dict nor an existing'):
        MODELS.build(dict(type='HFCausalLM', config=str(tmp_path / 'nothing')))
    with pytest.raises(ValueError, match="init_device='meta' builds the model from config"):
        MODELS.build(dict(type='HFCausalLM', pretrained_path=str(tmp_path), init_device='meta'))
