# Copyright (c) mmdms contributors. All rights reserved.
"""HFCausalLM: a transformers causal LM as an mmengine model."""
import math

import pytest
import torch

pytest.importorskip('transformers')

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
