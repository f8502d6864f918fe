# Copyright (c) mmdms contributors. All rights reserved.
"""Perplexity over HFCausalLM's 'predict' outputs, fed as the Runner's validation loop does
(TextBlockDataset, default_collate, val_step)."""
import math

import pytest
import torch

pytest.importorskip('transformers')

from mmengine.registry import DefaultScope  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from mmrazor.registry import MODELS  # noqa: E402

from mmdms.evaluation import Perplexity  # noqa: E402

CONFIG = dict(model_type='llama', vocab_size=256, hidden_size=16, intermediate_size=24,
              num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)


def test_perplexity_is_exp_of_the_token_mean_nll(tmp_path):
    (tmp_path / 'text.txt').write_text('Perplexity of a tiny random model over bytes. ' * 6)
    with DefaultScope.overwrite_default_scope('mmpretrain'):  # configs/dms/llama_7b.py's
        loader = Runner.build_dataloader(dict(
            batch_size=3, num_workers=0,
            dataset=dict(type='TextBlockDataset', data_root=str(tmp_path), pattern='*.txt',
                         block_size=16, split='all'),
            collate_fn=dict(type='default_collate'),
            sampler=dict(type='DefaultSampler', shuffle=False)))
    torch.manual_seed(0)
    model = MODELS.build(dict(type='HFCausalLM', config=CONFIG)).eval()
    metric = Perplexity()
    for batch in loader:  # batches of 3, 3, ... and a last smaller one
        metric.process(batch, model.val_step(batch))
    result = metric.evaluate(len(loader.dataset))

    blocks = loader.dataset.blocks
    with torch.no_grad():  # one pass over every block: the mean next-token loss
        loss = model.model(input_ids=blocks, labels=blocks).loss
    assert math.isclose(result['lm/nll'], float(loss), rel_tol=1e-5)
    assert math.isclose(result['lm/perplexity'], math.exp(float(loss)), rel_tol=1e-5)
    assert len(blocks) % 3  # the last batch was smaller: token weighting mattered


def test_wrong_outputs_are_refused():
    with pytest.raises(ValueError, match="nll and num_tokens of HFCausalLM's 'predict'"):
        Perplexity().process(None, [torch.zeros(3)])
