# Copyright (c) mmdms contributors. All rights reserved.
"""cached_pretraining: a language-model supernet is trained once per setting and kept as a
Hugging Face directory holding the trained weights."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

pytest.importorskip('transformers')

from mmdms.apis import cached_pretraining, setting_key  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'dms', 'demo', 'llama_demo_pretrain.py')


def tiny_config() -> Config:
    """The demo's supernet config made tiny: a 2-layer GQA Llama, 2 iterations over 16-byte
    blocks of the README."""
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict(dict(
        model=dict(config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                               max_position_embeddings=16)),
        train_cfg=dict(max_iters=2, val_interval=2),
        param_scheduler=[dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=2)],
        default_hooks=dict(checkpoint=dict(interval=2)),
        experiment_name='cached_pretraining'))
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.dataset.update(data_root=REPO, pattern='README.md', block_size=16,
                              val_fraction=0.1)
        loader.batch_size = 4
    return cfg


def test_trained_once_per_setting_and_saved_as_hf(tmp_path):
    from transformers import AutoModelForCausalLM
    cfg = tiny_config()
    first = cached_pretraining(cfg, str(tmp_path))
    assert not first['cached'] and first['key'] == setting_key(cfg)
    assert first['lm/perplexity'] > 1 and first['params'] == 2 * 256 * 32 + 32 + 2 * (
        32 * (32 + 16 + 16 + 32) + 3 * 32 * 48 + 2 * 32)
    # the directory holds the trained weights: those of the training's last checkpoint
    trained = torch.load(osp.join(str(tmp_path), f"{first['key']}.train", 'iter_2.pth'),
                         map_location='cpu', weights_only=False)['state_dict']
    loaded = AutoModelForCausalLM.from_pretrained(first['hf_dir']).state_dict()
    assert loaded.keys() == {k[len('model.'):] for k in trained}
    assert all(torch.equal(loaded[k[len('model.'):]], v) for k, v in trained.items())
    # the same setting again: nothing is trained
    again = cached_pretraining(tiny_config(), str(tmp_path))
    assert again['cached'] and again['hf_dir'] == first['hf_dir']
    assert again['lm/perplexity'] == first['lm/perplexity']
    # another setting: another key
    other = tiny_config()
    other.optim_wrapper.optimizer.lr = 1e-4
    assert setting_key(other) != first['key']


def test_refuses_a_config_that_is_not_a_language_model(tmp_path):
    cfg = tiny_config()
    cfg.model = dict(type='ImageClassifier')
    with pytest.raises(ValueError, match='trains an HFCausalLM config'):
        cached_pretraining(cfg, str(tmp_path))
